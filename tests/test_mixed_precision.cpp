// Mixed precision: every op of the bf16 region with bf16 storage against the float64 reference on
// the same bf16 values (forward) and against central finite differences of that reference (backward); the
// whole model's gradients in each mixed mode against the float32 model's; bytes per parameter per precision
// measured by the allocator; and training `tiny` on real text for 200 steps in each precision.
//
// Tolerances, derived from bf16 rounding (u = 2⁻⁸, the unit roundoff of an 8-bit significand, round to nearest
// even): an op whose float32 arithmetic result is rounded once to bf16 is within u·|ref| of the reference per
// element, plus the float32 terms (kF32 relative to the tensor's largest value; the finite differences' own
// error is below 1e-6 relative here). A chain of k roundings feeding each other is within about k·u·(the
// chain's amplification): stated per op below as a multiple of u against max |ref| (normwise).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "estimators/memory.h"
#include "model/data.h"
#include "model/transformer.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/rmsnorm.h"
#include "ops/activation.h"
#include "optim/step.h"
#include "runtime/bf16.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using namespace testing_ref;

constexpr double kU = 1.0 / 256;  // bf16 unit roundoff, 2⁻⁸
constexpr double kF32 = 1e-4;     // float32 arithmetic + finite-difference error, relative to max |ref|

// A bf16 tensor holding v rounded to nearest even.
Tensor bf16_from(const Vec& v, const Shape& shape, Category cat, const std::string& name) {
  Tensor t = Tensor::empty(shape, cat, name, DType::bf16);
  for (size_t i = 0; i < v.size(); ++i) t.data_bf16()[i] = to_bf16(static_cast<float>(v[i]));
  return t;
}
// v as bf16 would hold it.
Vec rounded(const Vec& v) {
  Vec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_float(to_bf16(static_cast<float>(v[i])));
  return r;
}
// The values of a float32 or bf16 tensor.
Vec values(const Tensor& t) {
  if (t.dtype() == DType::f32) return vec_from(t);
  Vec v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = to_float(t.data_bf16()[i]);
  return v;
}
double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}
// Every element within `rel`·|ref| + kF32·max |ref|: the per-element bound of one final rounding.
void expect_elementwise(const Vec& got, const Vec& ref, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size());
  const double floor = kF32 * max_abs(ref);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(got[i] - ref[i]), rel * std::abs(ref[i]) + floor) << what << " element " << i;
  }
}

class MixedOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!bf16_matmul_unavailable_reason().empty()) GTEST_SKIP() << bf16_matmul_unavailable_reason();
    set_num_threads(2);
    counters().reset();
    counters().set_phase(Phase::forward);
  }
};

// SiLU and the SwiGLU gate in bf16: one rounding per output element (forward and backward), so per element
// within u·|ref|. Counts at 2 bytes per element.
TEST_F(MixedOps, SiluAndGateInBf16WithinOneRounding) {
  const int64_t n = 1000;
  const Vec a = rounded(random_vec(n, 1, 4.0)), b = rounded(random_vec(n, 2, 2.0)), r = rounded(random_vec(n, 3));
  const Tensor at = bf16_from(a, {n}, Category::activation, "a"), bt = bf16_from(b, {n}, Category::activation, "b");
  const Tensor rt = bf16_from(r, {n}, Category::temporary, "r");
  Tensor out = Tensor::empty({n}, Category::activation, "out", DType::bf16);
  Vec silu(n), gate(n), dsilu(n), dga(n), dgb(n);
  for (int64_t i = 0; i < n; ++i) {
    const double s = 1.0 / (1.0 + std::exp(-a[i]));
    silu[i] = a[i] * s;
    gate[i] = silu[i] * b[i];
    const double ds = s * (1.0 + a[i] * (1.0 - s));  // d silu / da
    dsilu[i] = r[i] * ds;
    dga[i] = r[i] * b[i] * ds;
    dgb[i] = r[i] * silu[i];
  }
  activation_forward(Activation::silu, out, at);
  expect_elementwise(values(out), silu, kU, "silu");
  gated_activation_forward(Activation::silu, out, at, bt);
  expect_elementwise(values(out), gate, kU, "gate");
  counters().set_phase(Phase::backward);
  Tensor ga = Tensor::empty({n}, Category::temporary, "ga", DType::bf16);
  Tensor gb = Tensor::empty({n}, Category::temporary, "gb", DType::bf16);
  activation_backward(Activation::silu, ga, rt, at);
  expect_elementwise(values(ga), dsilu, kU, "silu backward");
  // The analytic derivatives above against finite differences of the reference (both in double).
  EXPECT_LE(rel_err(dga, fd_grad(
                             [&](const Vec& x) {
                               double l = 0;
                               for (int64_t i = 0; i < n; ++i) l += x[i] / (1.0 + std::exp(-x[i])) * b[i] * r[i];
                               return l;
                             },
                             a)),
            1e-6);
  gated_activation_backward(Activation::silu, ga, gb, rt, at, bt);
  expect_elementwise(values(ga), dga, kU, "gate backward da");
  expect_elementwise(values(gb), dgb, kU, "gate backward db");
  EXPECT_EQ(counters().get("swiglu", Phase::forward).bytes_read, 2 * 2 * n);
  EXPECT_EQ(counters().get("swiglu", Phase::forward).bytes_written, 2 * n);
  EXPECT_EQ(counters().get("silu", Phase::forward).bytes_read, 2 * n);
  expect_invalid([&] { activation_forward(Activation::silu, out, tensor_from(a, {n}, Category::activation, "a32")); },
                 {"equal element counts and dtypes", "bfloat16", "float32"});
}

// bf16 activations are the float32 kernels on the widened inputs, each output rounded once: bit for bit, over
// several of the kernels' staging chunks and a ragged tail, for every activation, plain and gated.
TEST_F(MixedOps, ActivationsInBf16AreTheFloat32KernelsRounded) {
  const int64_t n = 3 * 1024 + 37;
  const Vec a = rounded(random_vec(n, 4, 4.0)), b = rounded(random_vec(n, 5, 2.0)), r = rounded(random_vec(n, 6));
  auto both = [&](const Vec& v, const char* name) {
    return std::pair{bf16_from(v, {n}, Category::temporary, name), tensor_from(v, {n}, Category::temporary, name)};
  };
  const auto [a16, a32] = both(a, "a");
  const auto [b16, b32] = both(b, "b");
  const auto [r16, r32] = both(r, "r");
  auto pair_of = [&](const char* name) {
    return std::pair{Tensor::empty({n}, Category::temporary, name, DType::bf16),
                     Tensor::empty({n}, Category::temporary, name)};
  };
  auto expect_rounded = [&](const Tensor& got, const Tensor& f32, const std::string& what) {
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += got.data_bf16()[i].bits != to_bf16(f32.data()[i]).bits;
    EXPECT_EQ(mismatches, 0) << what;
  };
  for (Activation act : {Activation::silu, Activation::gelu, Activation::gelu_tanh}) {
    const std::string name = activation_op_name(act, true);
    auto [y16, y32] = pair_of("y");
    auto [z16, z32] = pair_of("z");
    activation_forward(act, y16, a16);
    activation_forward(act, y32, a32);
    expect_rounded(y16, y32, name + " plain forward");
    activation_backward(act, y16, r16, a16);
    activation_backward(act, y32, r32, a32);
    expect_rounded(y16, y32, name + " plain backward");
    gated_activation_forward(act, y16, a16, b16);
    gated_activation_forward(act, y32, a32, b32);
    expect_rounded(y16, y32, name + " gated forward");
    gated_activation_backward(act, y16, z16, r16, a16, b16);
    gated_activation_backward(act, y32, z32, r32, a32, b32);
    expect_rounded(y16, y32, name + " gated backward, gate");
    expect_rounded(z16, z32, name + " gated backward, up");
  }
}

// RMSNorm with a float32 input, bf16 gain, bf16 output and bf16 gain gradient: the output and dg are rounded
// once (u per element); dx is float32 arithmetic on exact bf16 gains (float32 tolerance).
TEST_F(MixedOps, RmsnormBf16OutputAndGainAgainstFiniteDifferences) {
  const int64_t n = 6, d = 40;
  const double eps = 1e-5;
  const Vec x = random_vec(n * d, 1), g = rounded(random_vec(d, 2, 2.0)), r = random_vec(n * d, 3);
  const Vec g0 = rounded(random_vec(d, 4));
  Tensor xt = tensor_from(x, {n, d}, Category::activation, "x");
  Tensor gt = bf16_from(g, {d}, Category::parameter, "g");
  Tensor dgt = bf16_from(g0, {d}, Category::gradient, "g.grad");
  RmsnormSaved saved;
  Tensor y = rmsnorm_forward(saved, xt, gt, static_cast<float>(eps), "n", DType::bf16);
  ASSERT_EQ(y.dtype(), DType::bf16);
  expect_elementwise(values(y), rmsnorm_ref(x, g, n, d, eps), kU, "rmsnorm out");
  counters().set_phase(Phase::backward);
  Tensor dx = Tensor::empty({n, d}, Category::temporary, "dx");
  rmsnorm_backward(dx, dgt, tensor_from(r, {n, d}, Category::temporary, "dy"), saved, gt, false);
  auto loss_x = [&](const Vec& xx) { return dot(rmsnorm_ref(xx, g, n, d, eps), r); };
  auto loss_g = [&](const Vec& gg) { return dot(rmsnorm_ref(x, gg, n, d, eps), r); };
  EXPECT_LE(rel_err(vec_from(dx), fd_grad(loss_x, x)), kF32);
  Vec dg_ref = fd_grad(loss_g, g);
  for (int64_t j = 0; j < d; ++j) dg_ref[j] += g0[j];  // accumulated into the prior gradient
  expect_elementwise(values(dgt), dg_ref, kU, "rmsnorm dg");
  const OpCount fwd = counters().get("rmsnorm", Phase::forward), bwd = counters().get("rmsnorm", Phase::backward);
  EXPECT_EQ(fwd.bytes_read, 4 * n * d + 2 * d);
  EXPECT_EQ(fwd.bytes_written, 2 * n * d + 4 * n);
  EXPECT_EQ(bwd.bytes_read, 4 * (2 * n * d + n) + (2 + 2) * d);
  EXPECT_EQ(bwd.bytes_written, 4 * n * d + 2 * d);
}

// Attention in bf16: scores, exp(scores − max), probs and ctx are each rounded (4 roundings on the forward
// path, every value O(1) here), so normwise within 4u (measured ≈ 1u). Backward adds dP, dS and the dQ/dK/dV
// outputs (3 more): within 8u of the finite differences of the float64 reference.
TEST_F(MixedOps, AttentionInBf16WithinItsRoundings) {
  const int64_t b = 2, t = 9, d = 12, h = 3;
  for (const int64_t kvh : {h, int64_t{1}}) {  // multi-head, then multi-query (dK, dV summed over 3 heads in bf16)
    SCOPED_TRACE(kvh);
    counters().reset();
    counters().set_phase(Phase::forward);
    const int64_t dkv = kvh * (d / h);
    const Vec q = rounded(random_vec(b * t * d, 1)), k = rounded(random_vec(b * t * dkv, 2));
    const Vec v = rounded(random_vec(b * t * dkv, 3)), r = rounded(random_vec(b * t * d, 4));
    AttentionSaved saved;
    Tensor ctx = attention_forward(saved, bf16_from(q, {b, t, d}, Category::activation, "q"),
                                   bf16_from(k, {b, t, dkv}, Category::activation, "k"),
                                   bf16_from(v, {b, t, dkv}, Category::activation, "v"), h, kvh, "t.attn");
    ASSERT_EQ(ctx.dtype(), DType::bf16);
    ASSERT_EQ(saved.probs.dtype(), DType::bf16);
    EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn.probs"), aligned_size(2 * b * h * t * t));
    EXPECT_LE(rel_err(values(ctx), attention_ref(q, k, v, b, t, d, h, kvh)), 4 * kU);
    counters().set_phase(Phase::backward);
    Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq", DType::bf16);
    Tensor gk = Tensor::empty({b, t, dkv}, Category::temporary, "gk", DType::bf16);
    Tensor gv = Tensor::empty({b, t, dkv}, Category::temporary, "gv", DType::bf16);
    attention_backward(gq, gk, gv, bf16_from(r, {b, t, d}, Category::temporary, "gctx"), saved);
    auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      return dot(attention_ref(qq, kk, vv, b, t, d, h, kvh), r);
    };
    EXPECT_LE(rel_err(values(gq), fd_grad([&](const Vec& x) { return loss(x, k, v); }, q)), 8 * kU);
    EXPECT_LE(rel_err(values(gk), fd_grad([&](const Vec& x) { return loss(q, x, v); }, k)), 8 * kU);
    EXPECT_LE(rel_err(values(gv), fd_grad([&](const Vec& x) { return loss(q, k, x); }, v)), 8 * kU);
    const AttentionShape sh{b, t, h, kvh, d / h};
    EXPECT_EQ(counters().get("attention", Phase::forward).bytes_read,
              attention_forward_count(sh, DType::bf16).bytes_read);
    EXPECT_EQ(counters().get("attention", Phase::backward).bytes_read,
              attention_backward_count(sh, DType::bf16).bytes_read);
    EXPECT_EQ(2 * attention_forward_count(sh, DType::bf16).bytes_written,
              attention_forward_count(sh, DType::f32).bytes_written);
  }
}

// Cross-entropy on bf16 logits: the loss is float32 arithmetic on the exact bf16 values (float32 tolerance);
// dlogits goes through exp, normalise, −1, ·1/N, each rounded: per element within 4u of |ref| + kF32.
TEST_F(MixedOps, CrossEntropyOnBf16Logits) {
  const int64_t n = 5, v = 37;
  const Vec z = rounded(random_vec(n * v, 1, 3.0));
  const auto targets = random_ids(n, v, 2);
  Tensor logits = bf16_from(z, {n, v}, Category::activation, "logits");
  CrossEntropySaved saved;
  const double loss = cross_entropy_forward(saved, logits, int_tensor(targets, {n}, "targets"), "ce");
  EXPECT_NEAR(loss, cross_entropy_ref(z, targets, n, v), 1e-6 * std::abs(loss));
  counters().set_phase(Phase::backward);
  const Tensor grad = cross_entropy_backward(saved, 1.0f);
  ASSERT_EQ(grad.dtype(), DType::bf16);
  expect_elementwise(values(grad), fd_grad([&](const Vec& zz) { return cross_entropy_ref(zz, targets, n, v); }, z),
                     4 * kU, "dlogits");
  EXPECT_EQ(counters().get("cross_entropy", Phase::forward).bytes_read, 2 * n * v + 4 * 2 * n);
}

// Embedding from a bf16 table: the gather widens exactly; the scatter-add into a bf16 gradient rounds once per
// add (2 tokens share each row here: within 2u).
TEST_F(MixedOps, EmbeddingBf16TableAndGradient) {
  const int64_t b = 2, t = 4, vocab = 4, d = 8, n = b * t;
  const Vec w = rounded(random_vec(vocab * d, 1)), r = random_vec(n * d, 2);
  const std::vector<int32_t> ids = {0, 1, 2, 3, 3, 2, 1, 0};
  Tensor weight = bf16_from(w, {vocab, d}, Category::parameter, "emb");
  Tensor grad = Tensor::zeros({vocab, d}, Category::gradient, "emb.grad", DType::bf16);
  const Tensor tokens = int_tensor(ids, {b, t}, "tokens");
  const Tensor out = embedding_forward(tokens, weight, "emb.out");
  ASSERT_EQ(out.dtype(), DType::f32);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) ASSERT_EQ(out.data()[i * d + j], w[ids[i] * d + j]);
  counters().set_phase(Phase::backward);
  embedding_backward(grad, tensor_from(r, {b, t, d}, Category::temporary, "dy"), tokens);
  // Each add rounds relative to its own result, which can exceed the final sum (cancellation): bound by the
  // sum of magnitudes, 2u·Σ|terms| + float32.
  Vec ref(vocab * d, 0.0), magnitude(vocab * d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      ref[ids[i] * d + j] += r[i * d + j], magnitude[ids[i] * d + j] += std::abs(r[i * d + j]);
  const Vec got = values(grad);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_LE(std::abs(got[i] - ref[i]), 2 * kU * magnitude[i] + 1e-7) << i;
  EXPECT_EQ(counters().get("embedding", Phase::forward).bytes_read, 4 * n + 2 * n * d);
  EXPECT_EQ(counters().get("embedding", Phase::backward).bytes_written, 2 * n * d);
}

// Learned positions from a bf16 table: forward adds exactly widened rows in float32 (float32 tolerance);
// backward adds B rows into each bf16 gradient row, one rounding per add: within B·u of Σ|terms|.
TEST_F(MixedOps, PositionEmbeddingBf16TableAndGradient) {
  const int64_t b = 3, t = 4, t_max = 6, d = 8;
  const Vec x = random_vec(b * t * d, 1), pos = rounded(random_vec(t_max * d, 2)), r = random_vec(b * t * d, 3);
  Tensor xt = tensor_from(x, {b, t, d}, Category::activation, "x");
  Tensor pt = bf16_from(pos, {t_max, d}, Category::parameter, "pos");
  Tensor gp = Tensor::zeros({t_max, d}, Category::gradient, "pos.grad", DType::bf16);
  position_embedding_forward(xt, pt);
  for (int64_t i = 0; i < b * t * d; ++i) {
    ASSERT_EQ(xt.data()[i],
              static_cast<float>(static_cast<float>(x[i]) + static_cast<float>(pos[(i / d % t) * d + i % d])));
  }
  counters().set_phase(Phase::backward);
  position_embedding_backward(gp, tensor_from(r, {b, t, d}, Category::temporary, "dx"));
  const Vec got = values(gp);
  for (int64_t j = 0; j < t_max; ++j)
    for (int64_t c = 0; c < d; ++c) {
      double ref = 0, magnitude = 0;
      for (int64_t i = 0; j < t && i < b; ++i)
        ref += r[(i * t + j) * d + c], magnitude += std::abs(r[(i * t + j) * d + c]);
      ASSERT_LE(std::abs(got[j * d + c] - ref), b * kU * magnitude + 1e-7) << j << " " << c;
    }
  EXPECT_EQ(counters().get("position_embedding", Phase::forward).bytes_read, 4 * b * t * d + 2 * t * d);
  EXPECT_EQ(counters().get("position_embedding", Phase::backward).bytes_written, 2 * t * d);
}

// ------------------------------------------------------------------------------------------------ the model

TrainConfig tiny_in(Precision precision, GradDType grads = GradDType::automatic) {
  TrainConfig c = preset_config("tiny");
  c.model.precision = precision;
  c.model.grad_dtype = grads;
  return c;
}

// One forward + backward of `config` on a fixed batch; returns the loss and every gradient as doubles.
std::pair<double, std::vector<Vec>> loss_and_grads(const TrainConfig& config) {
  Transformer model(config.model, config.seed);
  const int64_t b = config.model.batch_size, t = config.model.context_length;
  Tensor tokens = Tensor::empty({b, t}, Category::activation, "tokens", DType::i32);
  Tensor targets = Tensor::empty({b, t}, Category::activation, "targets", DType::i32);
  TokenData::random(config.model.vocab_size, 3).fill_batch(tokens, targets, 0);
  model.zero_grad();
  const double loss = model.forward(tokens, targets);
  model.backward();
  std::vector<Vec> grads;
  for (const Parameter& p : model.parameters()) grads.push_back(values(p.grad));
  return {loss, grads};
}

// Each mixed mode's gradients against the float32 model's, parameter by parameter (normwise): the bf16 region
// rounds every activation and activation gradient (a few u per op, ~20 ops deep in tiny), so within 0.1 —
// loose, but a gradient that is missing, misrouted or scaled wrong is off by O(1). The loss within 1%.
TEST_F(MixedOps, ModelGradientsInEachModeFollowTheFloat32Model) {
  const auto [loss32, grads32] = loss_and_grads(tiny_in(Precision::fp32));
  for (const auto [precision, grads] : precision_settings()) {
    if (precision == Precision::fp32) continue;
    const TrainConfig config = tiny_in(precision, grads);
    SCOPED_TRACE(describe(config.model));
    const auto [loss, g] = loss_and_grads(config);
    EXPECT_NEAR(loss, loss32, 0.01 * loss32);
    ASSERT_EQ(g.size(), grads32.size());
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, rel_err(g[i], grads32[i]));
    EXPECT_LE(worst, 0.1);
    EXPECT_GT(worst, 0.0) << "bf16 rounding must show somewhere";
  }
}

// Bytes per parameter, measured by the allocator after a steady step, per precision: fp32 and amp-bf16
// 4 + 4 + 8, bf16 2 + 2 + 12 (ZeRO's 16), bf16 with fp32 grads 2 + 4 + 12 (Megatron's 18). In amp-bf16 the
// bf16 weight cache is gone after the step (its peak is the reconciliation's business).
TEST_F(MixedOps, BytesPerParameterByPrecisionMeasured) {
  struct Expect {
    Precision p;
    GradDType g;
    int64_t value, grad, state;
  };
  for (const Expect& e :
       {Expect{Precision::fp32, GradDType::automatic, 4, 4, 8},
        Expect{Precision::amp_bf16, GradDType::automatic, 4, 4, 8},
        Expect{Precision::bf16, GradDType::automatic, 2, 2, 12}, Expect{Precision::bf16, GradDType::fp32, 2, 4, 12}}) {
    const TrainConfig config = tiny_in(e.p, e.g);
    SCOPED_TRACE(describe(config.model));
    const MemoryStats before = tracker().stats();
    {
      TrainingSession run(config);
      TokenData::random(config.model.vocab_size, 1).fill_batch(run.tokens, run.targets, 0);
      run.warm_up();
      const MemoryStats s = tracker().stats();
      const int64_t p = run.model.num_parameters();
      auto held = [&](Category c) { return s[c].requested_bytes.current - before[c].requested_bytes.current; };
      EXPECT_EQ(held(Category::parameter), e.value * p);
      EXPECT_EQ(held(Category::gradient), e.grad * p);
      EXPECT_EQ(held(Category::optimizer_state), e.state * p);
      // The estimators' layout says the same.
      const ParameterStateLayout layout = parameter_state_layout(e.p, e.g);
      EXPECT_EQ(layout.value_bytes, e.value);
      EXPECT_EQ(layout.grad_bytes, e.grad);
      EXPECT_EQ(layout.optimizer_bytes, e.state);
      // amp-bf16's weight cache at the step's peak, by independent arithmetic (tiny: every tensor a multiple of
      // 64 B): the parameter category peaks at 4 B per parameter + 2 B per matmul weight (q, k, v, o, w1, w3,
      // w2 per layer, and the LM head) — the copies are all alive when backward starts.
      const ModelConfig& m = config.model;
      const int64_t matmul_weights =
          m.num_layers * (4 * m.d_model * m.d_model + 3 * m.d_ff * m.d_model) + m.vocab_size * m.d_model;
      EXPECT_EQ(estimate_step_memory(m).category_peak[static_cast<int>(Category::parameter)],
                e.value * p + (e.p == Precision::amp_bf16 ? 2 * matmul_weights : 0));
    }
  }
}

// Training `tiny` on real text for 200 steps in each precision: no NaN, and the final loss (mean of the last 10
// steps) within 2% of the float32 run with the same seed and data.
TEST_F(MixedOps, TrainingTinyOnTextInEachPrecisionTracksFloat32) {
  auto mean_last10 = [](const TrainConfig& config) {
    TrainingSession run(config);
    TokenData data = TokenData::from_file("/usr/share/common-licenses/GPL-3", config.model.vocab_size,
                                          config.model.context_length, int64_t{1} << 30);
    double sum = 0;
    for (int64_t step = 0; step < 200; ++step) {
      data.fill_batch(run.tokens, run.targets, step);
      const double loss = run.step();
      EXPECT_TRUE(std::isfinite(loss)) << "step " << step;
      if (step >= 190) sum += loss / 10;
    }
    return sum;
  };
  const double fp32 = mean_last10(tiny_in(Precision::fp32));
  EXPECT_LT(fp32, 0.6 * std::log(256.0));
  for (const auto [precision, grads] : precision_settings()) {
    if (precision == Precision::fp32) continue;
    const TrainConfig config = tiny_in(precision, grads);
    SCOPED_TRACE(describe(config.model));
    EXPECT_NEAR(mean_last10(config), fp32, 0.02 * fp32);
  }
}

// The config field: --set / TOML values, presets keep fp32, bad values name the field and the allowed values.
TEST(PrecisionConfig, ParsesValidatesAndDescribes) {
  TrainConfig c = preset_config("S");
  EXPECT_EQ(c.model.precision, Precision::fp32);
  apply_override(c, "precision=amp-bf16");
  EXPECT_EQ(c.model.precision, Precision::amp_bf16);
  EXPECT_TRUE(c.model.dtypes().weight_cache);
  EXPECT_EQ(c.model.dtypes().param, DType::f32);
  apply_override(c, "precision=bf16");
  EXPECT_EQ(c.model.dtypes().grad, DType::bf16);
  apply_override(c, "grad_dtype=fp32");
  EXPECT_EQ(c.model.dtypes().grad, DType::f32);
  EXPECT_TRUE(c.model.dtypes().master_weights);
  EXPECT_NE(describe(c.model).find("bf16 (fp32 grads)"), std::string::npos);
  expect_invalid([&] { apply_override(c, "precision=fp16"); },
                 {"precision: 'fp16' is not allowed", "fp32, amp-bf16, bf16"});
  expect_invalid([&] { apply_override(c, "grad_dtype=fp16"); }, {"grad_dtype: 'fp16'", "auto, fp32, bf16"});
  TrainConfig amp = preset_config("tiny");
  apply_override(amp, "precision=amp-bf16");
  apply_override(amp, "grad_dtype=bf16");
  expect_invalid([&] { validate(amp); }, {"grad_dtype: bf16 needs precision = bf16", "amp-bf16"});
  const TrainConfig from_toml = parse_config_text("preset = \"tiny\"\n[model]\nprecision = \"bf16\"\n", "x.toml");
  EXPECT_EQ(from_toml.model.precision, Precision::bf16);
  expect_invalid([&] { parse_config_text("precision = 16\n", "x.toml"); }, {"x.toml", "precision"});
}

}  // namespace
}  // namespace reckon
