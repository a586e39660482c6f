// Flash-style causal attention (FlashAttention-2's algorithm, on CPU), given Q, K, V (B, T, D), H heads,
// d_k = D / H:   out = softmax(Q Kᵀ / sqrt(d_k), causal) V,   lse = the log-sum-exp of each score row.
// No T×T buffer exists at any moment: forward runs blocks of kFlashQueryBlock query rows against key blocks
// of kFlashKeyBlock (Kᵀ of the block staged once, scores vectorised over the keys) with an online softmax (running max
// m and sum l, the output accumulator rescaled per block); only the output and lse = m + log(l) per row (float32,
// B·H·T) are kept for backward, which recomputes every score from Q, K and lse: p = exp(s − lse), D = rowsum(dO ∘ O),
// dS = p (dP − D). Key tiles entirely above the diagonal are never visited: row i touches keys 0..i.
//
// dtypes: Q, K, V, out and the gradients float32 or bf16 (one dtype); lse, every accumulation and the
// arithmetic float32. Threads own whole (batch, head) pairs, so no two threads write one element.
//
// Memory (tracked): saved lse "<name>.lse" (activation, B·H·T float32; q, k, v and out are references);
// workspaces "<name>.workspace" (forward) and "<name>.grad_workspace" (backward), temporary, threads ×
// flash_{forward,backward}_workspace_floats float32 each, alive for the call.
//
// FLOPs as executed (causal: row i has i + 1 keys; nb(i) = ceil((i + 1) / kFlashKeyBlock) key blocks; the
// 1/sqrt(d_k) scale is folded into each query row, d_k multiplies, and into dQ, d_k more, only when d_k > 1):
//   forward,  per row:  matmul 4·d_k·(i+1)   (scores, P·V)
//                       other  4·(i+1) + nb(i)·(d_k + 4) + d_k + 3 [+ d_k scaled]
//                       (max, exp(s − m) as 2, sum; per block: rescale c = exp(m − m') as 2, l·c + sum as 2,
//                        acc·c as d_k; at the end 1/l, acc/l as d_k, m + log l as 2)
//   backward, per row:  matmul 10·d_k·(i+1)  (scores, dV += p·dO, dP = dO·V, dK += dS·q, dQ += dS·K)
//                       other  4·(i+1) + 2·d_k [+ 2·d_k scaled]   (p = exp(s − lse) as 2, dS = p·(dP − D) as 2;
//                        D = dO·O as 2·d_k)
// Bytes: compulsory traffic, each tensor once: forward reads Q, K, V, writes out and lse; backward reads Q, K,
// V, out, dO and lse, writes dQ, dK, dV.
#pragma once

#include <string>
#include <string_view>

#include "runtime/counters.h"
#include "runtime/contract.h"
#include "runtime/tensor.h"

namespace reckon {

constexpr int64_t kFlashKeyBlock = 64;
constexpr int64_t kFlashQueryBlock = 64;

// Per-thread workspace, in float32 elements: forward (query block's scaled rows, accumulators, m, l, one Kᵀ
// block, one block of scores) and backward (the head's dQ accumulator, D, scaled Q; Kᵀ, Vᵀ, dK and dV of one
// key block; p, dP, dS of one block).
int64_t flash_forward_workspace_floats(int64_t dk);
int64_t flash_backward_workspace_floats(int64_t t, int64_t dk);

struct FlashAttentionSaved {
  Tensor q, k, v, out, lse;
  int64_t num_heads = 0;
  std::string name;
};

// out (B, T, D), activation "<name>.ctx" of q's dtype, written `=`; saves lse. Throws std::invalid_argument
// if D % num_heads != 0, shapes or dtypes differ.
Tensor flash_attention_forward(FlashAttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t num_heads, std::string_view name);

// grad_q, grad_k, grad_v (B, T, D), written `=`. Frees everything saved.
void flash_attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                              FlashAttentionSaved& saved);

OpCount flash_attention_forward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype = DType::f32);
OpCount flash_attention_backward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype = DType::f32);

// Σ over rows of nb(i) = Σ_{r=1..T} ceil(r / kFlashKeyBlock): the key blocks one head's forward visits.
int64_t flash_key_blocks(int64_t t);

// What each direction allocates, at `threads` OpenMP threads: forward "<name>.lse" (B, H, T float32; saved),
// "<name>.ctx" (B, T, D in q's dtype; output, kept as saved.out) and "<name>.workspace" (threads × per-thread
// floats; temporary); backward "<name>.grad_workspace" (threads × per-thread floats; temporary).
struct FlashAttentionTensors {
  TensorDecl lse, ctx, workspace;
};
FlashAttentionTensors flash_attention_forward_tensors(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype,
                                                      int64_t threads);
TensorDecl flash_attention_backward_tensor(int64_t t, int64_t d, int64_t h, int64_t threads);

}  // namespace reckon
