// Cross-entropy over logits, mean over tokens, numerically stable (log-sum-exp).
//   N = rows (B*T), V = vocab size.
//   loss = (1/N) Σ_n [ log Σ_v exp(z_nv) − z_n,target(n) ]
//
// dtypes: logits float32 or bf16 (mixed precision: the LM head's bf16 output, as autocast on CPU); the arithmetic
// is float32 (each row widened), probabilities and dlogits are rounded to the logits' dtype in place.
// Memory: one logits-sized buffer, the caller's logits tensor (activation, e.g. "lm_head.logits"). Forward
// overwrites it in place with softmax probabilities (kept for backward); backward overwrites it in place
// with dlogits = (probs − onehot) · dloss / N, the fused softmax-minus-one-hot gradient. No second
// logits-sized buffer exists at any moment. Forward also uses a temporary "<name>.row_loss" (N floats) so the
// mean is summed in double in a fixed order.
//
// Soft-capped logits (Gemma-2's final_logit_softcapping c): the loss is over z_c = c·tanh(z / c). Forward overwrites
// the logits with u = tanh(z / c) (what autograd keeps for tanh's backward in Hugging Face's Gemma-2, here in place)
// and saves each row's log-sum-exp "<name>.lse" (N float32, activation); backward recomputes p = exp(c·u − lse) and
// writes dz = (p − onehot) · dloss / N · (1 − u²) in place. Still one logits-sized buffer.
#pragma once

#include <string>
#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

struct CrossEntropySaved {
  Tensor probs;    // the logits buffer, now holding softmax probabilities (capped: tanh(z / c))
  Tensor targets;  // (B, T) int32, a reference
  Tensor lse;      // capped: each row's log-sum-exp of c·tanh(z / c)
  float softcap = 0.0f;
};

// Returns the mean loss. logits (N, V) or (B, T, V), contiguous; targets int32 with N elements in [0, V-1];
// softcap 0 (none) or finite > 0.
double cross_entropy_forward(CrossEntropySaved& saved, const Tensor& logits, const Tensor& targets,
                             std::string_view name, float softcap = 0.0f);

// Returns grad_logits, which is the saved buffer itself, written `=` in place. Drops the saved references.
// mean_rows: the rows the differentiated loss is the mean over (0 = this call's N). Gradient accumulation's loss is the
// mean over K micro-batches of N rows each: mean_rows = K·N gives each row's gradient 1 / (K·N), exactly as one batch
// of K·N rows would.
Tensor cross_entropy_backward(CrossEntropySaved& saved, float grad_loss, int64_t mean_rows = 0);

// forward: per row (V−1) max-compares, 2V for z−max and exp, V adds, log, (z_t − m), subtract,
//          1 reciprocal, V multiplies = 5V + 3; then N adds and 1 division for the mean → N(5V+4) + 1.
//          Capped, per row: 2V for u = tanh(z / c), (V−1) compares and 1 multiply for m = c·max u, 4V for
//          exp(c·u − m) and its sum, 1 for z_t = c·u_t, log and 2 subtracts for the row loss, 1 add for lse =
//          m + log = 7V + 5 → N(7V+6) + 1.
// backward: 1 division (dloss/N), per row 1 subtract at the target + V multiplies → N(V+1) + 1.
//          Capped, per row: 7V for exp(c·u − lse)·scale·(1 − u²), then 8 to redo the target's with its − 1
//          → N(7V+8) + 1.
OpCount cross_entropy_forward_count(int64_t n, int64_t v, DType logits = DType::f32, bool capped = false);
// What the forward allocates: "<name>.row_loss" (N float32; temporary). Softmax and dlogits overwrite the logits.
TensorDecl cross_entropy_forward_tensor(int64_t n);
// Capped, also "<name>.lse" (N float32; saved until backward), allocated before the row losses.
TensorDecl cross_entropy_lse_tensor(int64_t n);
OpCount cross_entropy_backward_count(int64_t n, int64_t v, DType logits = DType::f32, bool capped = false);

}  // namespace reckon
