#include "ops/norm.h"

#include "runtime/check.h"

namespace reckon {

Tensor norm_forward(NormKind kind, NormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    float eps, std::string_view name, DType out_dtype) {
  saved.kind = kind;
  if (kind == NormKind::layernorm) return layernorm_forward(saved.ln, x, weight, bias, eps, name, out_dtype);
  check_arg(!bias.defined(), "rmsnorm: '{}' has no bias (a bias is layernorm's)", name);
  return rmsnorm_forward(saved.rms, x, weight, eps, name, out_dtype);
}

void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   NormSaved& saved, const Tensor& weight, bool accumulate_grad_x) {
  if (saved.kind == NormKind::layernorm) {
    layernorm_backward(grad_x, grad_weight, grad_bias, grad_out, saved.ln, weight, accumulate_grad_x);
    return;
  }
  rmsnorm_backward(grad_x, grad_weight, grad_out, saved.rms, weight, accumulate_grad_x);
}

std::vector<TensorDecl> norm_forward_tensors(NormKind kind, const Shape& x_shape, DType out_dtype) {
  if (kind == NormKind::layernorm) {
    const LayernormTensors t = layernorm_forward_tensors(x_shape, out_dtype);
    return {t.out, t.mean, t.rstd};
  }
  const RmsnormTensors t = rmsnorm_forward_tensors(x_shape, out_dtype);
  return {t.out, t.rstd};
}

OpCount norm_forward_count(NormKind kind, int64_t n, int64_t d, bool bias, DType weight, DType out) {
  return kind == NormKind::layernorm ? layernorm_forward_count(n, d, bias, weight, out)
                                     : rmsnorm_forward_count(n, d, weight, out);
}

OpCount norm_backward_count(NormKind kind, int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight,
                            DType grad_weight) {
  return kind == NormKind::layernorm ? layernorm_backward_count(n, d, bias, accumulate_grad_x, weight, grad_weight)
                                     : rmsnorm_backward_count(n, d, accumulate_grad_x, weight, grad_weight);
}

}  // namespace reckon
