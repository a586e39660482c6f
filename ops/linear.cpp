#include "ops/linear.h"

#include <algorithm>

#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/matmul.h"

namespace reckon {

OpCount linear_forward_count(int64_t n, int64_t in, int64_t out, const LinearDTypes& t, bool bias) {
  OpCount c;
  c.matmul_flops = 2 * n * in * out;
  c.other_flops = bias ? n * out : 0;
  c.bytes_read =
      dtype_bytes(t.x) * n * in + dtype_bytes(t.weight) * out * in + (bias ? dtype_bytes(t.weight) * out : 0);
  c.bytes_written = dtype_bytes(t.out) * n * out;
  return c;
}

OpCount linear_backward_count(int64_t n, int64_t in, int64_t out, bool accumulate_grad_x, const LinearDTypes& t,
                              bool bias) {
  OpCount c;
  c.matmul_flops = 2 * (2 * n * in * out);
  c.other_flops = (accumulate_grad_x ? n * in : 0) + out * in + (bias ? n * out : 0);
  const int64_t gy = dtype_bytes(t.grad_out), gx = dtype_bytes(t.grad_x), gw = dtype_bytes(t.grad_weight);
  // dX: reads grad_out, weight (+ grad_x); dW: reads grad_out, x, grad_weight; dbias: grad_out, grad_bias.
  c.bytes_read = gy * n * out + dtype_bytes(t.weight) * out * in + (accumulate_grad_x ? gx * n * in : 0) +
                 gy * n * out + dtype_bytes(t.x) * n * in + gw * out * in + (bias ? gy * n * out + gw * out : 0);
  c.bytes_written = gx * n * in + gw * out * in + (bias ? gw * out : 0);
  return c;
}

void bias_backward(const Tensor& grad_bias, const Tensor& grad_out, std::string_view op) {
  const int64_t out = grad_out.size(-1), n = grad_out.numel() / out;
  check_arg(grad_out.is_contiguous() && grad_bias.dim() == 1 && grad_bias.size(0) == out && grad_bias.is_contiguous(),
            "linear backward: grad_bias '{}' {} must be a contiguous vector of grad_out's {} columns", grad_bias.name(),
            grad_bias.shape_str(), out);
  OpRecord record(op);
  constexpr int64_t kColumns = 256;  // a chunk of column sums held in float32 while the rows stream by
  dispatch_floating(grad_out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* gy = data_as<T>(grad_out);
    dispatch_floating(grad_bias.dtype(), [&](auto bias_tag) {
      using B = decltype(bias_tag);
      B* gb = data_as<B>(grad_bias);
#pragma omp parallel for schedule(static)
      for (int64_t c0 = 0; c0 < out; c0 += kColumns) {
        const int64_t w = std::min(kColumns, out - c0);
        float acc[kColumns];
        for (int64_t c = 0; c < w; ++c) acc[c] = widen(gb[c0 + c]);
        for (int64_t r = 0; r < n; ++r) {
          const T* row = gy + r * out + c0;
#pragma omp simd
          for (int64_t c = 0; c < w; ++c) acc[c] += widen(row[c]);
        }
        for (int64_t c = 0; c < w; ++c) gb[c0 + c] = narrow<B>(acc[c]);
      }
    });
  });
  record.count.other_flops = n * out;
  record.count.bytes_read = dtype_bytes(grad_out.dtype()) * n * out + dtype_bytes(grad_bias.dtype()) * out;
  record.count.bytes_written = dtype_bytes(grad_bias.dtype()) * out;
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
                      DType out_dtype, Category out_category, std::string_view op, const Tensor& bias) {
  check_arg(weight.dim() == 2, "linear: weight '{}' must be (OUT, IN), got {}", weight.name(), weight.shape_str());
  check_arg(x.size(-1) == weight.size(1), "linear: x {} has {} features, weight '{}' {} expects IN = {}", x.shape_str(),
            x.size(-1), weight.name(), weight.shape_str(), weight.size(1));
  Tensor out = linear_forward_tensors(x.shape(), weight.size(0), out_dtype, out_category).out.allocate(out_name);
  check_arg(!bias.defined() || bias.dtype() == weight.dtype(), "linear: bias '{}' is {}, weight '{}' is {}: one dtype",
            bias.name(), dtype_name(bias.dtype()), weight.name(), dtype_name(weight.dtype()));
  matmul(rows_view(out, "out"), rows_view(x, "x"), weight.transpose(0, 1), op, 1.0f, false, bias);
  saved.x = x;
  return out;
}

void linear_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, LinearSaved& saved,
                     const Tensor& weight, bool accumulate_grad_x, std::string_view op, const Tensor& grad_bias) {
  check_arg(saved.x.defined(), "linear backward: nothing saved (forward not run, or backward run twice)");
  const Tensor x = rows_view(saved.x, "x"), gx = rows_view(grad_x, "grad_x"), gy = rows_view(grad_out, "grad_out");
  matmul(gx, gy, weight, op, 1.0f, accumulate_grad_x);         // dX = dY · W
  matmul(grad_weight, gy.transpose(0, 1), x, op, 1.0f, true);  // dW += dYᵀ · X
  if (grad_bias.defined()) bias_backward(grad_bias, gy, op);   // db += Σ_rows dY
  saved.x.reset();
}

}  // namespace reckon
