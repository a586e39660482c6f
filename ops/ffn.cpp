#include "ops/ffn.h"

#include "ops/silu.h"
#include "runtime/check.h"

namespace reckon {

Tensor ffn_forward(FfnSaved& saved, const Tensor& h, const Tensor& w1, const Tensor& w3, const Tensor& w2,
                   FfnKind kind, std::string_view name) {
  const std::string prefix(name);
  check_arg(w2.dim() == 2 && w1.dim() == 2 && w2.size(1) == w1.size(0) && w2.size(0) == w1.size(1),
            "ffn: w1 {} and w2 {} must be (F, D) and (D, F)", w1.shape_str(), w2.shape_str());
  if (kind == FfnKind::swiglu) {
    check_arg(w3.defined() && w3.shape() == w1.shape(), "ffn: swiglu needs w3 with w1's shape {}", w1.shape_str());
  }
  saved.kind = kind;
  saved.name = prefix;
  const DType act_dtype = h.dtype();
  saved.w1_out = linear_forward(saved.w1, h, w1, prefix + ".w1_out", act_dtype);
  Tensor act;
  if (kind == FfnKind::swiglu) {
    saved.w3_out = linear_forward(saved.w3, h, w3, prefix + ".w3_out", act_dtype);
    act = Tensor::empty(saved.w1_out.shape(), Category::activation, prefix + ".gated", act_dtype);
    swiglu_gate_forward(act, saved.w1_out, saved.w3_out);
  } else {
    act = Tensor::empty(saved.w1_out.shape(), Category::activation, prefix + ".silu_out", act_dtype);
    silu_forward(act, saved.w1_out);
  }
  return linear_forward(saved.w2, act, w2, prefix + ".out", DType::f32, Category::temporary);
}

void ffn_backward(const Tensor& grad_h, const Tensor& grad_w1, const Tensor& grad_w3, const Tensor& grad_w2,
                  const Tensor& grad_out, FfnSaved& saved, const Tensor& w1, const Tensor& w3, const Tensor& w2) {
  check_arg(saved.w1_out.defined(), "ffn backward: nothing saved (forward not run, or backward run twice)");
  const Shape act_shape = saved.w1_out.shape();
  const DType act_dtype = saved.w1_out.dtype();
  Tensor grad_act = Tensor::empty(act_shape, Category::temporary, saved.name + ".grad_act", act_dtype);
  linear_backward(grad_act, grad_w2, grad_out, saved.w2, w2, false);  // frees the gated / silu activation
  Tensor grad_w1_out = Tensor::empty(act_shape, Category::temporary, saved.name + ".grad_w1_out", act_dtype);
  if (saved.kind == FfnKind::swiglu) {
    Tensor grad_w3_out = Tensor::empty(act_shape, Category::temporary, saved.name + ".grad_w3_out", act_dtype);
    swiglu_gate_backward(grad_w1_out, grad_w3_out, grad_act, saved.w1_out, saved.w3_out);
    grad_act.reset();
    saved.w1_out.reset();
    saved.w3_out.reset();
    linear_backward(grad_h, grad_w3, grad_w3_out, saved.w3, w3, false);
    grad_w3_out.reset();
    linear_backward(grad_h, grad_w1, grad_w1_out, saved.w1, w1, true);
  } else {
    silu_backward(grad_w1_out, grad_act, saved.w1_out);
    grad_act.reset();
    saved.w1_out.reset();
    linear_backward(grad_h, grad_w1, grad_w1_out, saved.w1, w1, false);
  }
}

}  // namespace reckon
