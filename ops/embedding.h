// Token embedding: a row gather in forward, a race-free scatter-add in backward.
// The table and its gradient are float32 or bf16 (the parameters' / gradients' dtypes); the output and
// grad_out, the residual stream, are float32 (a bf16 row widens exactly). A bf16 gradient rounds once per add.
//   B = batch, T = sequence length, V = vocab size, D = d_model; N = B*T rows.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// out (B, T, D) = weight (V, D) [tokens (B, T)] · scale, written `=`. out is allocated as activation `out_name`.
// scale ≠ 1: Gemma's √D normaliser, applied as the rows are gathered. Saves nothing of its own: backward needs only
// the token ids, which the caller keeps. Throws std::invalid_argument naming the position of any token id outside
// [0, V-1].
Tensor embedding_forward(const Tensor& tokens, const Tensor& weight, std::string_view out_name, float scale = 1.0f);

// grad_weight (V, D) += grad_out (B, T, D) rows · scale, each added to the row of its token id.
// Threads split D (each owns whole columns), so no two threads ever touch the same element.
void embedding_backward(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& tokens, float scale = 1.0f);

// Counts (docs/conventions.md). forward: 0 FLOPs (N*D multiplies when scaled); reads N ids + N*D weight elements,
// writes N*D. backward: N*D adds (+ N*D multiplies when scaled); reads N ids, N*D grad_out and N*D grad_weight
// elements, writes N*D. Weight / grad_weight bytes at their dtype.
OpCount embedding_forward_count(int64_t n, int64_t d, DType weight = DType::f32, bool scaled = false);
// What the forward allocates: the rows (B, T, D float32, activation; output), named by the caller. Position
// embeddings add in place and allocate nothing.
TensorDecl embedding_forward_tensor(int64_t b, int64_t t, int64_t d);
OpCount embedding_backward_count(int64_t n, int64_t d, DType grad_weight = DType::f32, bool scaled = false);

}  // namespace reckon

namespace reckon {

// Learned positions, in place: x (B, T, D) += pos_weight (T_max ≥ T, D) [t], for every b. Saves nothing.
void position_embedding_forward(const Tensor& x, const Tensor& pos_weight);
// grad_pos (T_max, D) rows 0..T-1 += Σ_b grad_x (B, T, D) [b, t]. Threads split t: race-free.
void position_embedding_backward(const Tensor& grad_pos, const Tensor& grad_x);

// forward: B·T·D adds; reads B·T·D of x + T·D of pos, writes B·T·D.
// backward: B·T·D adds; reads B·T·D of grad_x + T·D of grad_pos, writes T·D.
OpCount position_embedding_forward_count(int64_t b, int64_t t, int64_t d, DType weight = DType::f32);
OpCount position_embedding_backward_count(int64_t b, int64_t t, int64_t d, DType grad_weight = DType::f32);

}  // namespace reckon
