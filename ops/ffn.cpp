#include "ops/ffn.h"

#include "ops/silu.h"
#include "runtime/check.h"

namespace reckon {

FfnForwardTensors ffn_forward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind) {
  Shape wide = h_shape;
  wide.back() = d_ff;
  const bool swiglu = kind == FfnKind::swiglu;
  FfnForwardTensors t{{".w1_out", Category::activation, act_dtype, wide, Lifetime::saved},
                      std::nullopt,
                      {swiglu ? ".gated" : ".silu_out", Category::activation, act_dtype, wide, Lifetime::saved},
                      {".out", Category::temporary, DType::f32, h_shape, Lifetime::output}};
  if (swiglu) t.w3_out = TensorDecl{".w3_out", Category::activation, act_dtype, wide, Lifetime::saved};
  return t;
}

FfnBackwardTensors ffn_backward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind) {
  Shape wide = h_shape;
  wide.back() = d_ff;
  FfnBackwardTensors t{{".grad_act", Category::temporary, act_dtype, wide, Lifetime::temporary},
                       {".grad_w1_out", Category::temporary, act_dtype, wide, Lifetime::temporary},
                       std::nullopt};
  if (kind == FfnKind::swiglu) {
    t.grad_w3_out = TensorDecl{".grad_w3_out", Category::temporary, act_dtype, wide, Lifetime::temporary};
  }
  return t;
}

Tensor ffn_forward(FfnSaved& saved, const Tensor& h, const Tensor& w1, const Tensor& w3, const Tensor& w2, FfnKind kind,
                   std::string_view name) {
  const std::string prefix(name);
  check_arg(w2.dim() == 2 && w1.dim() == 2 && w2.size(1) == w1.size(0) && w2.size(0) == w1.size(1),
            "ffn: w1 {} and w2 {} must be (F, D) and (D, F)", w1.shape_str(), w2.shape_str());
  if (kind == FfnKind::swiglu) {
    check_arg(w3.defined() && w3.shape() == w1.shape(), "ffn: swiglu needs w3 with w1's shape {}", w1.shape_str());
  }
  saved.kind = kind;
  saved.name = prefix;
  const DType act_dtype = h.dtype();
  const FfnForwardTensors decl = ffn_forward_tensors(h.shape(), w1.size(0), act_dtype, kind);
  saved.w1_out = linear_forward(saved.w1, h, w1, prefix + std::string(decl.w1_out.suffix), decl.w1_out.dtype,
                                decl.w1_out.category);
  Tensor act;
  if (kind == FfnKind::swiglu) {
    saved.w3_out = linear_forward(saved.w3, h, w3, prefix + std::string(decl.w3_out->suffix), decl.w3_out->dtype,
                                  decl.w3_out->category);
    act = decl.act.allocate(prefix);
    swiglu_gate_forward(act, saved.w1_out, saved.w3_out);
  } else {
    act = decl.act.allocate(prefix);
    silu_forward(act, saved.w1_out);
  }
  return linear_forward(saved.w2, act, w2, prefix + std::string(decl.out.suffix), decl.out.dtype, decl.out.category);
}

void ffn_backward(const Tensor& grad_h, const Tensor& grad_w1, const Tensor& grad_w3, const Tensor& grad_w2,
                  const Tensor& grad_out, FfnSaved& saved, const Tensor& w1, const Tensor& w3, const Tensor& w2) {
  check_arg(saved.w1_out.defined(), "ffn backward: nothing saved (forward not run, or backward run twice)");
  const FfnBackwardTensors decl =
      ffn_backward_tensors(grad_h.shape(), saved.w1_out.size(-1), saved.w1_out.dtype(), saved.kind);
  Tensor grad_act = decl.grad_act.allocate(saved.name);
  linear_backward(grad_act, grad_w2, grad_out, saved.w2, w2, false);  // frees the gated / silu activation
  Tensor grad_w1_out = decl.grad_w1_out.allocate(saved.name);
  if (saved.kind == FfnKind::swiglu) {
    Tensor grad_w3_out = decl.grad_w3_out->allocate(saved.name);
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
