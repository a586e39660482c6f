#include "ops/ffn.h"

#include "runtime/check.h"

namespace reckon {

namespace {
// The activation output's name: "gated" for gated kinds, else the plain activation's op ("silu_out", "gelu_out").
std::string_view act_suffix(FfnKind kind) {
  if (ffn_gated(kind)) return ".gated";
  return ffn_activation(kind) == Activation::silu ? ".silu_out" : ".gelu_out";
}
}  // namespace

FfnForwardTensors ffn_forward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind,
                                      Category out_category) {
  Shape wide = h_shape;
  wide.back() = d_ff;
  FfnForwardTensors t{{".w1_out", Category::activation, act_dtype, wide, Lifetime::saved},
                      std::nullopt,
                      {act_suffix(kind), Category::activation, act_dtype, wide, Lifetime::saved},
                      {".out", out_category, DType::f32, h_shape, Lifetime::output}};
  if (ffn_gated(kind)) t.w3_out = TensorDecl{".w3_out", Category::activation, act_dtype, wide, Lifetime::saved};
  return t;
}

FfnBackwardTensors ffn_backward_tensors(const Shape& h_shape, int64_t d_ff, DType act_dtype, FfnKind kind) {
  Shape wide = h_shape;
  wide.back() = d_ff;
  FfnBackwardTensors t{{".grad_act", Category::temporary, act_dtype, wide, Lifetime::temporary},
                       {".grad_w1_out", Category::temporary, act_dtype, wide, Lifetime::temporary},
                       std::nullopt};
  if (ffn_gated(kind)) {
    t.grad_w3_out = TensorDecl{".grad_w3_out", Category::temporary, act_dtype, wide, Lifetime::temporary};
  }
  return t;
}

Tensor ffn_forward(FfnSaved& saved, const Tensor& h, const FfnWeights& w, FfnKind kind, std::string_view name,
                   Category out_category) {
  const std::string prefix(name);
  check_arg(w.w2.dim() == 2 && w.w1.dim() == 2 && w.w2.size(1) == w.w1.size(0) && w.w2.size(0) == w.w1.size(1),
            "ffn: w1 {} and w2 {} must be (F, D) and (D, F)", w.w1.shape_str(), w.w2.shape_str());
  const bool gated = ffn_gated(kind);
  if (gated) {
    check_arg(w.w3.defined() && w.w3.shape() == w.w1.shape(), "ffn: {} needs w3 with w1's shape {}",
              ffn_kind_name(kind), w.w1.shape_str());
  }
  saved.kind = kind;
  saved.name = prefix;
  const DType act_dtype = h.dtype();
  const FfnForwardTensors decl = ffn_forward_tensors(h.shape(), w.w1.size(0), act_dtype, kind, out_category);
  saved.w1_out = linear_forward(saved.w1, h, w.w1, prefix + std::string(decl.w1_out.suffix), decl.w1_out.dtype,
                                decl.w1_out.category, "linear", w.b1);
  if (gated) {
    saved.w3_out = linear_forward(saved.w3, h, w.w3, prefix + std::string(decl.w3_out->suffix), decl.w3_out->dtype,
                                  decl.w3_out->category, "linear", w.b3);
  }
  Tensor act = decl.act.allocate(prefix);
  if (gated) {
    gated_activation_forward(ffn_activation(kind), act, saved.w1_out, saved.w3_out);
  } else {
    activation_forward(ffn_activation(kind), act, saved.w1_out);
  }
  return linear_forward(saved.w2, act, w.w2, prefix + std::string(decl.out.suffix), decl.out.dtype, decl.out.category,
                        "linear", w.b2);
}

void ffn_backward(const Tensor& grad_h, const FfnWeights& grad, const Tensor& grad_out, FfnSaved& saved,
                  const FfnWeights& w, bool accumulate_grad_h) {
  check_arg(saved.w1_out.defined(), "ffn backward: nothing saved (forward not run, or backward run twice)");
  const FfnBackwardTensors decl =
      ffn_backward_tensors(grad_h.shape(), saved.w1_out.size(-1), saved.w1_out.dtype(), saved.kind);
  Tensor grad_act = decl.grad_act.allocate(saved.name);
  // frees the gated / activation output
  linear_backward(grad_act, grad.w2, grad_out, saved.w2, w.w2, false, "linear", grad.b2);
  Tensor grad_w1_out = decl.grad_w1_out.allocate(saved.name);
  const Activation act = ffn_activation(saved.kind);
  if (ffn_gated(saved.kind)) {
    Tensor grad_w3_out = decl.grad_w3_out->allocate(saved.name);
    gated_activation_backward(act, grad_w1_out, grad_w3_out, grad_act, saved.w1_out, saved.w3_out);
    grad_act.reset();
    saved.w1_out.reset();
    saved.w3_out.reset();
    linear_backward(grad_h, grad.w3, grad_w3_out, saved.w3, w.w3, accumulate_grad_h, "linear", grad.b3);
    grad_w3_out.reset();
    linear_backward(grad_h, grad.w1, grad_w1_out, saved.w1, w.w1, true, "linear", grad.b1);
  } else {
    activation_backward(act, grad_w1_out, grad_act, saved.w1_out);
    grad_act.reset();
    saved.w1_out.reset();
    linear_backward(grad_h, grad.w1, grad_w1_out, saved.w1, w.w1, accumulate_grad_h, "linear", grad.b1);
  }
}

}  // namespace reckon
