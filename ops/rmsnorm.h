// RMSNorm: y = x / sqrt(mean(x²) + eps) · g, over the last dim.   N = rows (B*T), D = d_model.
// x, dy and dx are float32 (the residual stream and its gradient stay float32 in every precision) — or all bf16
// (q and k under qk_norm in the bf16 region; arithmetic in float32); the gain g
// and its gradient are float32 or bf16 (the parameters' and gradients' dtypes), and y is float32 or bf16 (a
// mixed-precision step writes the matmuls' bf16 input directly: no separate cast). Statistics are float32.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// What backward needs: the input x (a reference, no new bytes) and rstd = 1/sqrt(mean(x²)+eps) per row
// (N floats, activation "<name>.rstd").
struct RmsnormSaved {
  Tensor x;
  Tensor rstd;
};

// out (N, D) = x (N, D) · rstd · weight (D), written `=`; out is allocated as activation "<name>.out" of
// dtype out_dtype.
Tensor rmsnorm_forward(RmsnormSaved& saved, const Tensor& x, const Tensor& weight, float eps, std::string_view name,
                       DType out_dtype = DType::f32);

// grad_x (N, D)   = rstd · (g ⊙ dy) − x · rstd³ · (Σ_j dy_j g_j x_j) / D   (`=`, or `+=` with accumulate)
// grad_weight (D) += Σ_rows dy ⊙ x · rstd   (summed over rows in float32, added to grad_weight once)
// Frees saved.x and saved.rstd.
void rmsnorm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, RmsnormSaved& saved,
                      const Tensor& weight, bool accumulate_grad_x);

// What the forward allocates (runtime/contract.h): "<name>.out" (x's shape, out_dtype; output) and
// "<name>.rstd" (one float32 per row; saved). Backward allocates nothing.
struct RmsnormTensors {
  TensorDecl out, rstd;
};
RmsnormTensors rmsnorm_forward_tensors(const Shape& x_shape, DType out_dtype);

// FLOPs per row, as the loops execute them (exp/sqrt/div count 1 each):
//   forward  4*D + 4   (D squares + D adds, /D, +eps, sqrt, 1/x, then 2 multiplies per element)
//   backward 10*D + 4  (dot: 3 per element; r³·dot/D: 4; dx: 4 per element (+1 with accumulate); dg: 3)
// Bytes at each tensor's dtype: weight (g), out (y), grad_weight.
// x, dy, dx at x's dtype (float32 on the residual stream; q and k's own dtype under qk_norm).
OpCount rmsnorm_forward_count(int64_t n, int64_t d, DType weight = DType::f32, DType out = DType::f32,
                              DType x = DType::f32);
OpCount rmsnorm_backward_count(int64_t n, int64_t d, bool accumulate_grad_x, DType weight = DType::f32,
                               DType grad_weight = DType::f32, DType x = DType::f32);

}  // namespace reckon
