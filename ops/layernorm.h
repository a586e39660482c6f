// LayerNorm (nn.LayerNorm over the last dim): y = (x − μ) · rstd · g [+ b],  μ = mean(x), rstd = 1/sqrt(var(x) + eps),
// var the biased (1/D) variance, computed in two passes (Σ(x − μ)², as PyTorch's CPU kernel: no cancellation).
// N = rows (B*T), D = d_model. dtypes as RMSNorm's (ops/rmsnorm.h): x, dy, dx float32; g, b and their gradients
// float32 or bf16 (the parameters' and gradients' dtypes); y float32 or bf16; statistics float32.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// What backward needs: the input x (a reference, no new bytes), mean and rstd per row (N floats each, activations
// "<name>.mean" and "<name>.rstd": what PyTorch's native_layer_norm saves).
struct LayernormSaved {
  Tensor x;
  Tensor mean, rstd;
};

// out (N, D) = (x − mean) · rstd · weight (+ bias), written `=`; out is allocated as activation "<name>.out" of
// dtype out_dtype. bias: undefined (none) or (D) of weight's dtype.
Tensor layernorm_forward(LayernormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         std::string_view name, DType out_dtype = DType::f32);

// With x̂ = (x − mean) · rstd and e = g ⊙ dy:
// grad_x (N, D)    = rstd · (e − mean(e) − x̂ · mean(e ⊙ x̂))   (`=`, or `+=` with accumulate_grad_x)
// grad_weight (D) += Σ_rows dy ⊙ x̂;   grad_bias (D) += Σ_rows dy (when defined)  (float32 sums, added once)
// Frees saved.x, saved.mean and saved.rstd.
void layernorm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                        const Tensor& grad_out, LayernormSaved& saved, const Tensor& weight, bool accumulate_grad_x);

// What the forward allocates: "<name>.out" (x's shape, out_dtype; output), "<name>.mean" and "<name>.rstd" (one
// float32 per row each; saved). Backward allocates nothing.
struct LayernormTensors {
  TensorDecl out, mean, rstd;
};
LayernormTensors layernorm_forward_tensors(const Shape& x_shape, DType out_dtype);

// FLOPs per row, as the loops execute them (sqrt and division count 1 each):
//   forward  7·D + 5 [+ D with bias]   (mean: D adds, /D; variance: D subtracts, squares, adds, /D, +eps, sqrt,
//                                        1/x; y: 3 per element (− μ, · rstd, · g) [+ b])
//   backward 17·D + 2 [+ D with bias] (+ D with accumulate)   (x̂ 2, e 1, Σe 1, Σe·x̂ 2 per element; two means 2;
//                                        dx: x̂ 2, e 1, − mean(e), x̂·mean(e x̂), −, · rstd: 7; dg: x̂ 2, ·dy, + : 4;
//                                        db: + 1)
// Bytes at each tensor's dtype: weight (g), bias, out (y), grad_weight, grad_bias.
OpCount layernorm_forward_count(int64_t n, int64_t d, bool bias, DType weight = DType::f32, DType out = DType::f32);
OpCount layernorm_backward_count(int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight = DType::f32,
                                 DType grad_weight = DType::f32);

}  // namespace reckon
