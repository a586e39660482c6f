#include "ops/norm.h"

#include <string>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount norm_gain_count(int64_t d, DType weight) {
  const CheckedInt D = d;
  OpCount c;
  c.other_flops = d;
  c.bytes_read = (dtype_bytes(weight) * D).value();
  c.bytes_written = (4 * D).value();
  return c;
}

TensorDecl norm_gain_tensor(int64_t d) { return {".gain", Category::temporary, DType::f32, {d}, Lifetime::temporary}; }

namespace {
// 1 + weight in float32 (Gemma's RMSNorm computes it in float32 whatever the weight's dtype).
Tensor unit_offset_gain(const Tensor& weight, std::string_view name) {
  check_arg(weight.dim() == 1 && weight.is_contiguous(), "norm: weight '{}' must be (D,), got {}", weight.name(),
            weight.shape_str());
  const int64_t d = weight.size(0);
  Tensor gain = norm_gain_tensor(d).allocate(name);
  OpRecord record("norm_gain");
  float* g = gain.data();
  dispatch_floating(weight.dtype(), [&](auto tag) {
    using W = decltype(tag);
    const W* w = data_as<W>(weight);
    for (int64_t j = 0; j < d; ++j) g[j] = 1.0f + widen(w[j]);
  });
  record.count = norm_gain_count(d, weight.dtype());
  return gain;
}
}  // namespace

Tensor norm_forward(NormKind kind, NormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias,
                    float eps, std::string_view name, DType out_dtype, bool unit_offset) {
  saved.kind = kind;
  saved.name = std::string(name);
  check_arg(!unit_offset || kind == NormKind::rmsnorm, "norm: '{}': a unit-offset gain is rmsnorm's (Gemma's)", name);
  if (kind == NormKind::layernorm) return layernorm_forward(saved.ln, x, weight, bias, eps, name, out_dtype);
  check_arg(!bias.defined(), "rmsnorm: '{}' has no bias (a bias is layernorm's)", name);
  if (!unit_offset) return rmsnorm_forward(saved.rms, x, weight, eps, name, out_dtype);
  const Tensor gain = unit_offset_gain(weight, name);
  return rmsnorm_forward(saved.rms, x, gain, eps, name, out_dtype);
}

void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   NormSaved& saved, const Tensor& weight, bool accumulate_grad_x, bool unit_offset) {
  if (saved.kind == NormKind::layernorm) {
    layernorm_backward(grad_x, grad_weight, grad_bias, grad_out, saved.ln, weight, accumulate_grad_x);
    return;
  }
  if (!unit_offset) {
    rmsnorm_backward(grad_x, grad_weight, grad_out, saved.rms, weight, accumulate_grad_x);
    return;
  }
  const Tensor gain = unit_offset_gain(weight, saved.name);
  rmsnorm_backward(grad_x, grad_weight, grad_out, saved.rms, gain, accumulate_grad_x);
}

std::vector<TensorDecl> norm_forward_tensors(NormKind kind, const Shape& x_shape, DType out_dtype) {
  if (kind == NormKind::layernorm) {
    const LayernormTensors t = layernorm_forward_tensors(x_shape, out_dtype);
    return {t.out, t.mean, t.rstd};
  }
  const RmsnormTensors t = rmsnorm_forward_tensors(x_shape, out_dtype);
  return {t.out, t.rstd};
}

OpCount norm_forward_count(NormKind kind, int64_t n, int64_t d, bool bias, DType weight, DType out, DType x) {
  return kind == NormKind::layernorm ? layernorm_forward_count(n, d, bias, weight, out)
                                     : rmsnorm_forward_count(n, d, weight, out, x);
}

OpCount norm_backward_count(NormKind kind, int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight,
                            DType grad_weight, DType x) {
  return kind == NormKind::layernorm ? layernorm_backward_count(n, d, bias, accumulate_grad_x, weight, grad_weight)
                                     : rmsnorm_backward_count(n, d, accumulate_grad_x, weight, grad_weight, x);
}

}  // namespace reckon
