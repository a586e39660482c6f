// Rotary position embedding (RoPE; Su et al. 2021, "RoFormer"), in Hugging Face's layout (LLaMA's rotate_half):
// each head vector x of width d_k (even) is split into halves, and pair (x[i], x[i + d_k/2]) at position p turns
// by the angle p·θ^(−2i/d_k):
//   out[i]         = x[i]·cos − x[i + d_k/2]·sin
//   out[i + d_k/2] = x[i + d_k/2]·cos + x[i]·sin
// Backward is the rotation by the opposite angle (the map is orthogonal): dx[i] = dy[i]·cos + dy[i + d_k/2]·sin,
// dx[i + d_k/2] = dy[i + d_k/2]·cos − dy[i]·sin.
//
// In place: q and k are rotated where the projections wrote them (what attention saves is the rotated q and k, as
// PyTorch's autograd saves apply_rotary_pos_emb's outputs), and backward rotates grad_q and grad_k in place before
// the projections' backward: no tensor beyond the tables.
//
// The tables: cos and sin (T, d_k/2) float32, "rope.cos" and "rope.sin", category activation — as in Hugging
// Face, where the rotary module computes them in each forward and the products save them for backward. Computed
// once per forward before the first block, shared by every layer, freed after the last block's backward. Angles
// are computed in float64 and rounded once (Hugging Face computes them in float32: a difference within float32's
// rounding of the angle).
//
// dtypes: x float32 or bf16 (rotated in float32, rounded once); tables float32.
// FLOPs: tables T·d_k/2·3 (angle, cos, sin; the d_k/2 inverse frequencies 2 each: a power and a reciprocal);
// rotation 3 per element (4 multiplies and 2 adds per pair), forward and backward alike.
// Bytes: tables write 2·4·T·d_k/2; a rotation reads x (B·T·heads·d_k elements) and both tables once, writes x.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

struct RopeTables {
  Tensor cos, sin;  // (T, d_k/2) float32
};

// Throws std::invalid_argument unless t ≥ 1, head_dim ≥ 2 is even and theta > 0 and finite.
RopeTables rope_tables(int64_t t, int64_t head_dim, double theta);
// x (B, T', heads·d_k) contiguous, T' ≤ the tables' T: rotated in place (forward), or by the opposite angle
// (backward, on a gradient).
void rope_forward(const Tensor& x, int64_t heads, const RopeTables& tables);
void rope_backward(const Tensor& grad, int64_t heads, const RopeTables& tables);

OpCount rope_tables_count(int64_t t, int64_t head_dim);
// One rotation (either direction) of b·t rows of `heads` heads of width head_dim, at x's dtype.
OpCount rope_count(int64_t b, int64_t t, int64_t heads, int64_t head_dim, DType dtype);
// "rope.cos", "rope.sin": (T, d_k/2) float32 activations.
struct RopeTensors {
  TensorDecl cos, sin;
};
RopeTensors rope_tables_tensors(int64_t t, int64_t head_dim);

}  // namespace reckon
