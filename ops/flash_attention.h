// Flash-style causal attention (FlashAttention-2's algorithm, on CPU), given q (B, T, H·d_k), k and v
// (B, T, KV·d_k) with KV key/value heads shared by groups of g = H / KV query heads (ops/attention.h):
//   out = softmax(Q Kᵀ / sqrt(d_k), causal) V,   lse = the log-sum-exp of each score row.
// No T×T buffer exists at any moment: forward runs blocks of kFlashQueryBlock query rows against key blocks
// of kFlashKeyBlock (Kᵀ of the block staged once, scores vectorised over the keys) with an online softmax (running max
// m and sum l, the output accumulator rescaled per block); only the output and lse = m + log(l) per row (float32,
// B·H·T) are kept for backward, which recomputes every score from Q, K and lse: p = exp(s − lse), D = rowsum(dO ∘ O),
// dS = p (dP − D). Key tiles entirely above the diagonal, or before a sliding window, are never visited: row i
// touches keys first_key(i) … i (ops/attention.h: 0 … i without a window). Soft-capping at c: the query rows carry
// 1 / (c·√d_k), each score s becomes c·tanh(s) before the softmax, and backward's dS gains the factor c − s_c·tanh(s).
// ALiBi: each score gains m_h·(j − i) (ops/attention.h) where it is computed, forward and in backward's recompute.
//
// dtypes: Q, K, V, out and the gradients float32 or bf16 (one dtype); lse, every accumulation and the
// arithmetic float32. Kernels (runtime/kernel_isa.h): with AVX-512 and d_k a multiple of 16, 64 × 64 tiles in
// full-width masked registers, the masked lanes zero — float32 FMAs (bf16 storage widened), or for bf16 storage AMX
// tiles (d_k a multiple of 32) or VDPBF16PS (the kernel level in effect decides) with the scaled query rows, P and dS
// rounded to bf16 as the products' operands (FlashAttention-2's rounding), the softmax and every sum float32; elsewhere
// (or with ONEDNN_MAX_CPU_ISA below avx512_core) the reference kernels described here, row by row. Same FLOPs, counts
// and allocations on every path. Forward threads own whole (batch, query head) pairs. Backward threads own (batch, K/V
// head, part) triples: with groups (g > 1) the group's query heads are split into P = min(g, ⌈threads / (B·KV)⌉) parts
// (so multi-query attention at batch 1 still feeds every thread), each part sums its heads' dK and dV into a float32
// partial (T × d_k each), and the P partials are summed and rounded once: no two threads write one element, no K/V head
// is repeated, and the g − 1 additions per element are the same for any P.
//
// Memory (tracked): saved lse "<name>.lse" (activation, B·H·T float32; q, k, v and out are references);
// workspaces "<name>.workspace" (forward) and "<name>.grad_workspace" (backward), temporary, threads ×
// flash_{forward,backward}_workspace_floats float32 each (bf16 storage: room for either path), alive for the call;
// with g > 1 the dK/dV partials "<name>.grad_kv_partials" (temporary, B·KV·P × 2 × T × d_k float32), freed before
// the workspace.
//
// FLOPs as executed (row i has n(i) = min(i + 1, W) keys, V = Σ n(i) per head; nb(i) key blocks hold them, Σ nb =
// flash_key_blocks; the query factor 1/√d_k (capped: 1/(c·√d_k)) is folded into each query row, d_k multiplies,
// and into dQ, d_k more, only when it is not 1):
//   forward,  per row:  matmul 4·d_k·n(i)   (scores, P·V)
//                       other  4·n(i) + nb(i)·(d_k + 4) + d_k + 3 [+ d_k scaled] [+ 2·n(i) capped: tanh, c·t]
//                              [+ 2·n(i) ALiBi: m·(j − i), the add]
//                       (max, exp(s − m) as 2, sum; per block: rescale c = exp(m − m') as 2, l·c + sum as 2,
//                        acc·c as d_k; at the end 1/l, acc/l as d_k, m + log l as 2)
//   backward, per row:  matmul 10·d_k·n(i)  (scores, dV += p·dO, dP = dO·V, dK += dS·q, dQ += dS·K)
//                       other  4·n(i) + 2·d_k [+ 2·d_k scaled] [+ 5·n(i) capped: tanh, c·t, c − s_c·t as 2, ·]
//                              [+ 2·n(i) ALiBi]
//                       (p = exp(s − lse) as 2, dS = p·(dP − D) as 2;
//                        D = dO·O as 2·d_k); per query head after the first of its group, 2·d_k per row (its dK and dV
//                        added into the group's sums)
// Bytes: compulsory traffic, each tensor once: forward reads Q, K, V, writes out and lse; backward reads Q, K,
// V, out, dO and lse, writes dQ, dK, dV (K and V are B·T·KV·d_k elements each).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ops/attention.h"
#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

constexpr int64_t kFlashKeyBlock = 64;
constexpr int64_t kFlashQueryBlock = 64;

// Per-thread workspace, in float32 elements: forward (query block's scaled rows, accumulators, m, l, one Kᵀ
// block, one block of scores) and backward (the head's dQ accumulator, D, scaled Q; Kᵀ, Vᵀ, dK and dV of one
// key block; p, dP, dS of one block).
// For bf16 storage, the larger of that and the VDPBF16PS kernels' (whole-head K and V pairs, one 64 × 64 tile of
// scores and bf16 P / dS, whichever path runs), so the bytes do not depend on the CPU.
int64_t flash_forward_workspace_floats(int64_t t, int64_t dk, DType dtype);
int64_t flash_backward_workspace_floats(int64_t t, int64_t dk, DType dtype);
// P: the parts each group's query heads are split into in backward (1 without groups).
int64_t flash_backward_parts(const AttentionShape& s, int64_t threads);

struct FlashAttentionSaved {
  Tensor q, k, v, out, lse;
  AttentionShape shape;
  std::string name;
};

// out (B, T, H·d_k), activation "<name>.ctx" of q's dtype, written `=`; saves lse. Throws std::invalid_argument
// as check_attention_inputs (ops/attention.h).
Tensor flash_attention_forward(FlashAttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t num_heads, int64_t num_kv_heads, std::string_view name,
                               const AttentionScores& scores = {});

// grad_q (q's shape), grad_k, grad_v (k's shape), written `=`. Frees everything saved.
void flash_attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                              FlashAttentionSaved& saved);

OpCount flash_attention_forward_count(const AttentionShape& s, DType dtype = DType::f32);
OpCount flash_attention_backward_count(const AttentionShape& s, DType dtype = DType::f32);

// Σ over rows of nb(i), the key blocks one head's forward visits: row i visits blocks floor(first_key(i) / 64) …
// floor(i / 64) (without a window Σ_{r=1..T} ceil(r / kFlashKeyBlock)).
int64_t flash_key_blocks(int64_t t, int64_t window = 0);
// The factor folded into the query rows: 1/√d_k, divided by the cap when capped.
float flash_query_scale(const AttentionShape& s);

// What each direction allocates, at `threads` OpenMP threads: forward "<name>.lse" (B, H, T float32; saved),
// "<name>.ctx" (B, T, H·d_k in q's dtype; output, kept as saved.out) and "<name>.workspace" (threads × per-thread
// floats; temporary); backward "<name>.grad_workspace" (threads × per-thread floats; temporary) and, with groups,
// "<name>.grad_kv_partials" (B·KV·P × 2 × T × d_k float32; temporary).
struct FlashAttentionTensors {
  TensorDecl lse, ctx, workspace;
};
struct FlashAttentionBackwardTensors {
  TensorDecl workspace;
  std::optional<TensorDecl> partials;
};
FlashAttentionTensors flash_attention_forward_tensors(const AttentionShape& s, DType dtype, int64_t threads);
FlashAttentionBackwardTensors flash_attention_backward_tensors(const AttentionShape& s, DType dtype, int64_t threads);

}  // namespace reckon
