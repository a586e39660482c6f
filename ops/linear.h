// Linear layer, nn.Linear layout: y = x · Wᵀ [+ b] with W stored (OUT, IN) and the optional bias b (OUT).
// All three products run on the cached oneDNN matmul; transposes are strides, never copies. The bias is oneDNN's
// bias argument of the forward matmul (no second pass over y); backward sums grad_out's rows into grad_bias.
//   N = rows (B*T), IN = in_features, OUT = out_features.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// What backward needs: the input x (a reference to the caller's tensor, no new bytes).
struct LinearSaved {
  Tensor x;
};

// out (N, OUT) = x (N, IN) · weight (OUT, IN)ᵀ, written `=`, allocated as `out_category` `out_name` of dtype
// `out_dtype` (bf16 only with bf16 operands). x may have leading dims (B, T, IN); they are flattened. out keeps
// x's leading dims.
// bias: undefined (none) or (OUT) of weight's dtype.
Tensor linear_forward(LinearSaved& saved, const Tensor& x, const Tensor& weight, std::string_view out_name,
                      DType out_dtype = DType::f32, Category out_category = Category::activation,
                      std::string_view op = "linear", const Tensor& bias = Tensor());

// grad_x (N, IN) = grad_out · weight       (`=`, or `+=` with accumulate_grad_x)
// grad_weight (OUT, IN) += grad_outᵀ · x   (always accumulated, PyTorch semantics)
// grad_bias (OUT) += Σ_rows grad_out       (when defined: float32 or bf16, summed in float32, rounded once)
// Frees saved.x.
void linear_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, LinearSaved& saved,
                     const Tensor& weight, bool accumulate_grad_x, std::string_view op = "linear",
                     const Tensor& grad_bias = Tensor());

// What the forward allocates: out (x's leading dims × OUT, out_dtype, out_category; output), named by the caller.
struct LinearTensors {
  TensorDecl out;
};
LinearTensors linear_forward_tensors(const Shape& x_shape, int64_t out_features, DType out_dtype,
                                     Category out_category);

// The dtypes of a linear's tensors. x and weight are both float32 or both bfloat16 (a mixed-precision step
// passes bf16 copies); grad_out matches them in backward; out, grad_x, grad_weight are float32 or (with bf16
// operands) bf16, accumulated in float32 by the matmul and rounded once — see runtime/matmul.h.
struct LinearDTypes {
  DType x = DType::f32, weight = DType::f32, out = DType::f32;
  DType grad_out = DType::f32, grad_x = DType::f32, grad_weight = DType::f32;
};

// Counts, from the matmul conventions: forward 2*N*IN*OUT [+ N*OUT bias adds; reads OUT bias values];
// backward 2*(2*N*IN*OUT) + N*IN*[accumulate] + OUT*IN (the dW accumulate) [+ N*OUT for dbias += Σ rows: reads
// grad_out again and grad_bias, writes grad_bias]. Bytes at each tensor's element size (the bias at weight's,
// its gradient at grad_weight's).
OpCount linear_forward_count(int64_t n, int64_t in, int64_t out, const LinearDTypes& dtypes = {}, bool bias = false);
OpCount linear_backward_count(int64_t n, int64_t in, int64_t out, bool accumulate_grad_x,
                              const LinearDTypes& dtypes = {}, bool bias = false);
// grad_bias (OUT) += the column sums of grad_out (N, OUT), the row sums in float32: counted under `op` as N·OUT adds,
// reads grad_out and grad_bias, writes grad_bias.
void bias_backward(const Tensor& grad_bias, const Tensor& grad_out, std::string_view op);

}  // namespace reckon
