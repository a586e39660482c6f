// Causal multi-head attention core with H query heads and KV key/value heads (KV divides H; group g = H / KV:
// query head h reads K/V head h / g, as Hugging Face's repeat_kv), head width d_k:
//   q (B, T, H·d_k), k and v (B, T, KV·d_k);  scores = Q Kᵀ / sqrt(d_k), [soft-capping], causal mask [inside a
//   sliding window], probs = softmax(scores), ctx (B, T, H·d_k) = probs V.
// A sliding window W (Mistral, Gemma-2's local layers) lets query i see keys i − W + 1 … i, W keys at most (Hugging
// Face's mask: key j is masked when i − j ≥ W); W ≥ T is causal attention exactly. Soft-capping (Gemma-2's
// attn_logit_softcapping = c) replaces each score s by c·tanh(s / c) before the mask, as Hugging Face's eager
// attention does. ALiBi (Press et al. 2022, "Train Short, Test Long"; MPT, BLOOM) adds m_h·(j − i) to score (i, j) of
// query head h after the 1/√d_k scale, with MPT's slopes (alibi_slopes): a linear penalty on the distance to the key,
// no parameters. Hugging Face's MPT adds m_h·(j − (T − 1)) instead, which differs per row by a constant that the
// softmax cancels; reckon keeps the bias at 0 on the diagonal, so scores stay small at any T.
// Heads are strided views of the (B, T, width) buffers: no head transposes and no repeated K/V heads are ever
// copied. Member j of every group (query heads j, g + j, 2g + j, …) is one view {B, KV, T, d_k}; each product
// runs as g oneDNN calls of batch B·KV, one per member, reading K and V's heads in place (with g = 1: one call of
// batch B·H, as plain multi-head attention). Backward sums dK and dV over a group in place: member 0 writes `=`,
// members 1 … g−1 accumulate into the same view (oneDNN's sum post-op; in bf16 each partial sum is rounded).
//
// Saved for backward: Q, K, V (references to the caller's tensors, no new bytes) and probs (B, H, T, T),
// activation "<name>.probs"; with soft-capping also tanh(s / c) (B, H, T, T), activation "<name>.tanh" (what
// autograd keeps for tanh's backward in Hugging Face's eager Gemma-2 attention; zeros outside the mask). Scores are not
// kept: softmax runs in place over the scores buffer, which becomes probs. Backward allocates grad_probs (B, H, T, T),
// temporary "<name>.grad_probs", and frees probs as soon as the softmax backward has used it.
//
// dtypes: Q, K, V float32 or bf16; probs, ctx and every gradient have the same dtype (mixed precision: the
// scores are the bf16 output of a bf16 matmul, as autocast's bmm; the softmax widens each row, computes in
// float32 and rounds the probabilities once). Bytes count each element at that size.
//
// FLOPs count what runs: oneDNN computes the full T×T products (the masked entries included, as zeros), so
// matmul FLOPs are the full 2·T·T·d_k per head and product; softmax and its backward loop only over the visible
// part (row i touches n(i) = min(i + 1, W) entries: V = Σ n(i) per head, T(T+1)/2 without a window) and count
// that; ALiBi adds 4·V (its m·(j − i) and the add, computed where the softmax reads a score: in its max pass and again
// in its exp pass, as nothing of T floats per row is kept).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {

// What happens to the scores beyond the causal mask: a sliding window of `window` keys (0 = none), soft-capping
// at `softcap` (0 = none) and ALiBi's distance penalty with MPT's alibi_bias_max (0 = none; refused with a cap).
struct AttentionScores {
  int64_t window = 0;
  float softcap = 0.0f;
  float alibi_bias_max = 0.0f;
};

// ALiBi's slope of query head h of `heads` (MPT's gen_slopes, Hugging Face's build_mpt_alibi_tensor): with P the
// power of two at or above `heads`, slope_k = 2^(−bias_max·k / P) for k = 1 … P; P = heads takes them in order, else
// the even-k slopes first, then the odd-k ones, the first `heads` of that list (BLOOM's slopes when bias_max = 8).
// Computed in float64, rounded once.
float alibi_slope(int64_t head, int64_t heads, float bias_max);

// The attention core's sizes: batch B, sequence T, query heads H, key/value heads KV (a divisor of H), head width,
// and the score rule.
struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t window = 0;                                       // 0 = none
  float softcap = 0.0f;                                     // 0 = none
  float alibi_bias_max = 0.0f;                              // 0 = no ALiBi
  int64_t group() const { return heads / kv_heads; }        // query heads per K/V head
  int64_t q_width() const { return heads * head_dim; }      // q's, ctx's and their gradients' last dim
  int64_t kv_width() const { return kv_heads * head_dim; }  // k's, v's and their gradients' last dim
  // The most keys a query row sees: the window, or T without one (or when it covers the sequence).
  int64_t span() const { return window > 0 && window < seq ? window : seq; }
  int64_t first_key(int64_t i) const { return i + 1 > span() ? i + 1 - span() : 0; }  // row i sees first_key(i) … i
  // V: the (query, key) pairs one head computes, Σ over rows of min(i + 1, W) (T(T+1)/2 without a window).
  int64_t visible() const {
    const int64_t w = span();
    return w * (w + 1) / 2 + (seq - w) * w;
  }
  bool capped() const { return softcap > 0.0f; }
  bool alibi() const { return alibi_bias_max > 0.0f; }
  float slope(int64_t head) const { return alibi() ? alibi_slope(head, heads, alibi_bias_max) : 0.0f; }
};

// Throws std::invalid_argument (naming `op`) unless q (B, T, H·d_k), k and v (B, T, KV·d_k) are contiguous, of one
// dtype, num_heads ≥ 1 divides q's width, num_kv_heads ≥ 1 divides num_heads, k's width is KV·d_k, the window is
// ≥ 0, the cap finite and ≥ 0, alibi_bias_max finite and ≥ 0, and not both a cap and ALiBi.
AttentionShape check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                                      int64_t num_kv_heads, std::string_view op, const AttentionScores& scores = {});

struct AttentionSaved {
  Tensor q, k, v, probs, tanh;
  AttentionShape shape;
  std::string name;
};

// ctx (B, T, H·d_k), allocated as activation "<name>.ctx", written `=`.
Tensor attention_forward(AttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                         int64_t num_kv_heads, std::string_view name, const AttentionScores& scores = {});

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
//                          5·V (softmax row i of n entries: n − 1 max-compares, 2n for x−max and exp, n adds,
//                          1 reciprocal, n multiplies) [+ 3·V capped: s / c, tanh, c·t] [+ 4·V ALiBi].
//                 backward matmul 8·T·T·d_k; other 2·T·d_k (scale fused in dQ, dK; none when d_k = 1) + 4·V
//                          (softmax backward row i: 2n for the dot, 2n for P·(dP − dot)) [+ 3·V capped: dS·(1 − t²)];
//                          per group member after the first, T·d_k adds into dK and T·d_k into dV.
// Bytes: each call's operands and destination (runtime/matmul.h) plus the softmax's.
OpCount attention_forward_count(const AttentionShape& s, DType dtype = DType::f32);
OpCount attention_backward_count(const AttentionShape& s, DType dtype = DType::f32);
// The softmax alone (one call of op "attention" between the two products; backward: between dV and dQ) over the
// B·H blocks of T×T: forward 5·V FLOPs per block (+ 3·V capped, + 4·V ALiBi), reads the visible part, writes every
// entry (and every entry of tanh, capped); backward 4·V (+ 3·V capped), reads P and dP (and tanh, capped) over the
// visible part, writes every dS.
OpCount attention_softmax_forward_count(const AttentionShape& s, DType dtype);
OpCount attention_softmax_backward_count(const AttentionShape& s, DType dtype);

// What each direction allocates: forward "<name>.probs" (B, H, T, T; saved), with soft-capping "<name>.tanh"
// (B, H, T, T; saved) and "<name>.ctx" (B, T, H·d_k; output), backward "<name>.grad_probs" (B, H, T, T;
// temporary), all in q's dtype.
struct AttentionTensors {
  TensorDecl probs;
  std::optional<TensorDecl> tanh;
  TensorDecl ctx;
};
AttentionTensors attention_forward_tensors(const AttentionShape& s, DType dtype);
TensorDecl attention_backward_tensor(const AttentionShape& s, DType dtype);

}  // namespace reckon
