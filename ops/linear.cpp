#include "ops/linear.h"

#include "runtime/check.h"
#include "runtime/matmul.h"

namespace reckon {

OpCount linear_forward_count(int64_t n, int64_t in, int64_t out, const LinearDTypes& t) {
  OpCount c;
  c.matmul_flops = 2 * n * in * out;
  c.bytes_read = dtype_bytes(t.x) * n * in + dtype_bytes(t.weight) * out * in;
  c.bytes_written = dtype_bytes(t.out) * n * out;
  return c;
}

OpCount linear_backward_count(int64_t n, int64_t in, int64_t out, bool accumulate_grad_x, const LinearDTypes& t) {
  OpCount c;
  c.matmul_flops = 2 * (2 * n * in * out);
  c.other_flops = (accumulate_grad_x ? n * in : 0) + out * in;
  const int64_t gy = dtype_bytes(t.grad_out), gx = dtype_bytes(t.grad_x), gw = dtype_bytes(t.grad_weight);
  // dX: reads grad_out, weight (+ grad_x); dW: reads grad_out, x, grad_weight.
  c.bytes_read = gy * n * out + dtype_bytes(t.weight) * out * in + (accumulate_grad_x ? gx * n * in : 0) +
                 gy * n * out + dtype_bytes(t.x) * n * in + gw * out * in;
  c.bytes_written = gx * n * in + gw * out * in;
  return c;
}

LinearTensors linear_forward_tensors(const Shape& x_shape, int64_t out_features, DType out_dtype,
                                     Category out_category) {
  Shape out_shape = x_shape;
  out_shape.back() = out_features;
  return {{"", out_category, out_dtype, out_shape, Lifetime::output}};
}

// (…, F) contiguous -> (rows, F) view.
static Tensor rows_view(const Tensor& t, const char* what) {
  check_arg(t.is_contiguous(), "linear: {} '{}' {} must be contiguous", what, t.name(), t.shape_str());
  const int64_t f = t.size(-1);
  return t.view({t.numel() / f, f});
}

Tensor linear_forward(LinearSaved& saved, const Tensor& x, const Tensor& weight, std::string_view out_name,
                      DType out_dtype, Category out_category, std::string_view op) {
  check_arg(weight.dim() == 2, "linear: weight '{}' must be (OUT, IN), got {}", weight.name(), weight.shape_str());
  check_arg(x.size(-1) == weight.size(1), "linear: x {} has {} features, weight '{}' {} expects IN = {}", x.shape_str(),
            x.size(-1), weight.name(), weight.shape_str(), weight.size(1));
  Tensor out = linear_forward_tensors(x.shape(), weight.size(0), out_dtype, out_category).out.allocate(out_name);
  matmul(rows_view(out, "out"), rows_view(x, "x"), weight.transpose(0, 1), op);
  saved.x = x;
  return out;
}

void linear_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, LinearSaved& saved,
                     const Tensor& weight, bool accumulate_grad_x, std::string_view op) {
  check_arg(saved.x.defined(), "linear backward: nothing saved (forward not run, or backward run twice)");
  const Tensor x = rows_view(saved.x, "x"), gx = rows_view(grad_x, "grad_x"), gy = rows_view(grad_out, "grad_out");
  matmul(gx, gy, weight, op, 1.0f, accumulate_grad_x);         // dX = dY · W
  matmul(grad_weight, gy.transpose(0, 1), x, op, 1.0f, true);  // dW += dYᵀ · X
  saved.x.reset();
}

}  // namespace reckon
