// Causal multi-head attention core, given Q, K, V of shape (B, T, D) with H heads, d_k = D / H:
//   scores = Q Kᵀ / sqrt(d_k), causal mask, probs = softmax(scores), ctx = probs V.
// Heads are strided views of the (B, T, D) buffers ({B, H, T, d_k} with strides {T·D, d_k, D, 1}): no head
// transposes are ever copied; oneDNN reads and writes those views directly.
//
// Saved for backward: Q, K, V (references to the caller's tensors, no new bytes) and probs (B, H, T, T),
// activation "<name>.probs". Scores are not kept: softmax runs in place over the scores buffer, which
// becomes probs. Backward allocates grad_probs (B, H, T, T), temporary "<name>.grad_probs", and frees probs
// as soon as the softmax backward has used it.
//
// dtypes: Q, K, V float32 or bf16; probs, ctx and every gradient have the same dtype (mixed precision: the
// scores are the bf16 output of a bf16 matmul, as autocast's bmm; the softmax widens each row, computes in
// float32 and rounds the probabilities once). Bytes count each element at that size.
//
// FLOPs count what runs: oneDNN computes the full T×T products (the masked upper triangle included, as
// zeros), so matmul FLOPs are the full 2·T·T·d_k per head and product; softmax and its backward loop only
// over the causal part (row i touches i+1 entries) and count that.
#pragma once

#include <string>
#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

struct AttentionSaved {
  Tensor q, k, v, probs;
  int64_t num_heads = 0;
  std::string name;
};

// ctx (B, T, D), allocated as activation "<name>.ctx", written `=`.
// Throws std::invalid_argument if D % num_heads != 0 or shapes differ.
Tensor attention_forward(AttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                         std::string_view name);

// grad_q, grad_k, grad_v (B, T, D), written `=`. Frees everything saved.
void attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                        AttentionSaved& saved);

// Per (b, h): forward  matmul 4·T·T·d_k; other T·T (the 1/sqrt(d_k) scale fused in QKᵀ; none when d_k = 1) + 5·T(T+1)/2
//                      (softmax row i: i max-compares, 2(i+1) for x−max and exp, i+1 adds, 1 reciprocal,
//                      i+1 multiplies).
//             backward matmul 8·T·T·d_k; other 2·T·d_k (scale fused in dQ, dK; none when d_k = 1) + 4·T(T+1)/2 (softmax
//                      backward row i: 2(i+1) for the dot, 2(i+1) for P·(dP − dot)).
OpCount attention_forward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype = DType::f32);
// The softmax alone (one call of op "attention" between the two products; backward: between dV and dQ) over
// bh = B·H blocks of T×T: forward 5·T(T+1)/2 FLOPs per block, reads the causal part, writes every entry;
// backward 4·T(T+1)/2, reads P and dP over the causal part, writes every dS.
OpCount causal_softmax_forward_count(int64_t bh, int64_t t, DType dtype);
OpCount causal_softmax_backward_count(int64_t bh, int64_t t, DType dtype);
OpCount attention_backward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype = DType::f32);

// What each direction allocates: forward "<name>.probs" (B, H, T, T; saved) and "<name>.ctx" (B, T, D; output),
// backward "<name>.grad_probs" (B, H, T, T; temporary), all in q's dtype.
struct AttentionTensors {
  TensorDecl probs, ctx;
};
AttentionTensors attention_forward_tensors(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype);
TensorDecl attention_backward_tensor(int64_t b, int64_t t, int64_t h, DType dtype);

// Throws std::invalid_argument (naming `op`) unless q, k, v are contiguous (B, T, D) tensors of one shape and
// dtype and num_heads divides D.
void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads, std::string_view op);

// The (B, H, T, d_k) head view of a (B, T, D) tensor.
Tensor head_view(const Tensor& x, int64_t num_heads);

}  // namespace reckon
