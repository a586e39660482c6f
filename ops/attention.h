// Causal multi-head attention core with H query heads and KV key/value heads (KV divides H; group g = H / KV:
// query head h reads K/V head h / g, as Hugging Face's repeat_kv), head width d_k:
//   q (B, T, H·d_k), k and v (B, T, KV·d_k);  scores = Q Kᵀ / sqrt(d_k), causal mask, probs = softmax(scores),
//   ctx (B, T, H·d_k) = probs V.
// Heads are strided views of the (B, T, width) buffers: no head transposes and no repeated K/V heads are ever
// copied. Member j of every group (query heads j, g + j, 2g + j, …) is one view {B, KV, T, d_k}; each product
// runs as g oneDNN calls of batch B·KV, one per member, reading K and V's heads in place (with g = 1: one call of
// batch B·H, as plain multi-head attention). Backward sums dK and dV over a group in place: member 0 writes `=`,
// members 1 … g−1 accumulate into the same view (oneDNN's sum post-op; in bf16 each partial sum is rounded).
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

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {

// The attention core's sizes: batch B, sequence T, query heads H, key/value heads KV (a divisor of H), head width.
struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t group() const { return heads / kv_heads; }        // query heads per K/V head
  int64_t q_width() const { return heads * head_dim; }      // q's, ctx's and their gradients' last dim
  int64_t kv_width() const { return kv_heads * head_dim; }  // k's, v's and their gradients' last dim
};

// Throws std::invalid_argument (naming `op`) unless q (B, T, H·d_k), k and v (B, T, KV·d_k) are contiguous, of one
// dtype, num_heads ≥ 1 divides q's width, num_kv_heads ≥ 1 divides num_heads and k's width is KV·d_k.
AttentionShape check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                                      int64_t num_kv_heads, std::string_view op);

struct AttentionSaved {
  Tensor q, k, v, probs;
  AttentionShape shape;
  std::string name;
};

// ctx (B, T, H·d_k), allocated as activation "<name>.ctx", written `=`.
Tensor attention_forward(AttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                         int64_t num_kv_heads, std::string_view name);

// grad_q (q's shape), grad_k and grad_v (k's shape), written `=`. Frees everything saved.
void attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                        AttentionSaved& saved);

// The oneDNN calls each direction makes, in order (dims, strides, alpha, accumulate and dtypes, as
// runtime/matmul.h's matmul_geometry reads them from the kernel's views): forward the g score products, [softmax],
// then the g context products; backward the g dP = dC Vᵀ, the g dV += Pᵀ dC, [softmax backward], the g
// dQ = dS K / √d_k, the g dK += dSᵀ Q / √d_k. The kernel builds its views from the same functions.
struct AttentionForwardMatmuls {
  std::vector<MatmulGeometry> scores, context;
};
struct AttentionBackwardMatmuls {
  std::vector<MatmulGeometry> grad_probs, grad_v, grad_q, grad_k;
};
AttentionForwardMatmuls attention_forward_matmuls(const AttentionShape& s, DType dtype);
AttentionBackwardMatmuls attention_backward_matmuls(const AttentionShape& s, DType dtype);

// Per query head: forward  matmul 4·T·T·d_k; other T·T (the 1/sqrt(d_k) scale fused in QKᵀ; none when d_k = 1) +
//                          5·T(T+1)/2 (softmax row i: i max-compares, 2(i+1) for x−max and exp, i+1 adds,
//                          1 reciprocal, i+1 multiplies).
//                 backward matmul 8·T·T·d_k; other 2·T·d_k (scale fused in dQ, dK; none when d_k = 1) + 4·T(T+1)/2
//                          (softmax backward row i: 2(i+1) for the dot, 2(i+1) for P·(dP − dot)); per group member
//                          after the first, T·d_k adds into dK and T·d_k into dV.
// Bytes: each call's operands and destination (runtime/matmul.h) plus the softmax's.
OpCount attention_forward_count(const AttentionShape& s, DType dtype = DType::f32);
OpCount attention_backward_count(const AttentionShape& s, DType dtype = DType::f32);
// The softmax alone (one call of op "attention" between the two products; backward: between dV and dQ) over
// bh = B·H blocks of T×T: forward 5·T(T+1)/2 FLOPs per block, reads the causal part, writes every entry;
// backward 4·T(T+1)/2, reads P and dP over the causal part, writes every dS.
OpCount causal_softmax_forward_count(int64_t bh, int64_t t, DType dtype);
OpCount causal_softmax_backward_count(int64_t bh, int64_t t, DType dtype);

// What each direction allocates: forward "<name>.probs" (B, H, T, T; saved) and "<name>.ctx" (B, T, H·d_k;
// output), backward "<name>.grad_probs" (B, H, T, T; temporary), all in q's dtype.
struct AttentionTensors {
  TensorDecl probs, ctx;
};
AttentionTensors attention_forward_tensors(const AttentionShape& s, DType dtype);
TensorDecl attention_backward_tensor(const AttentionShape& s, DType dtype);

}  // namespace reckon
