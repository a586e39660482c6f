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
// Frequency scaling (Hugging Face's rope_scaling; it changes the frequencies only, never a shape): linear divides
// every frequency by `factor` (positions p / factor); llama3 (Llama 3.1) keeps the frequencies whose wavelength
// 2π/f is below original_context / high_freq_factor, divides those above original_context / low_freq_factor by
// `factor`, and blends the band between: s = (original_context / wavelength − low) / (high − low),
// f ← (1 − s)·f/factor + s·f.
//
// dtypes: x float32 or bf16 (rotated in float32, rounded once); tables float32.
// FLOPs: tables T·d_k/2·3 (angle, cos, sin) + what the inverse frequencies execute (2 each: a power and a
// reciprocal; linear + 1; llama3 + 1 for the wavelength, then 0, 1 or 8 by band: see rope_inverse_frequencies);
// rotation 3 per element (4 multiplies and 2 adds per pair), forward and backward alike.
// Bytes: tables write 2·4·T·d_k/2; a rotation reads x (B·T·heads·d_k elements) and both tables once, writes x.
#pragma once

#include <string_view>
#include <vector>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

struct RopeTables {
  Tensor cos, sin;  // (T, d_k/2) float32
};

enum class RopeScaling { none, linear, llama3 };
struct RopeFrequencies {
  double theta = 10000;
  RopeScaling scaling = RopeScaling::none;
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;  // llama3: the band edges
  int64_t original_context = 8192;                               // llama3: original_max_position_embeddings
};
// The d_k/2 inverse frequencies, in float64; `flops` (if given) receives the FLOPs executed computing them.
std::vector<double> rope_inverse_frequencies(int64_t head_dim, const RopeFrequencies& f, int64_t* flops = nullptr);

// Throws std::invalid_argument unless t ≥ 1, head_dim ≥ 2 is even and theta > 0 and finite.
RopeTables rope_tables(int64_t t, int64_t head_dim, const RopeFrequencies& f);
// x (B, T', heads·d_k) contiguous, T' ≤ the tables' T: rotated in place (forward), or by the opposite angle
// (backward, on a gradient).
void rope_forward(const Tensor& x, int64_t heads, const RopeTables& tables);
void rope_backward(const Tensor& grad, int64_t heads, const RopeTables& tables);

OpCount rope_tables_count(int64_t t, int64_t head_dim, const RopeFrequencies& f);
// One rotation (either direction) of b·t rows of `heads` heads of width head_dim, at x's dtype.
OpCount rope_count(int64_t b, int64_t t, int64_t heads, int64_t head_dim, DType dtype);
// "rope.cos", "rope.sin": (T, d_k/2) float32 activations.
struct RopeTensors {
  TensorDecl cos, sin;
};
RopeTensors rope_tables_tensors(int64_t t, int64_t head_dim);

}  // namespace reckon
