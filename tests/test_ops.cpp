// ops/: every op's forward vs a float64 reference written plainly here, every backward vs central finite
// differences of that reference in double, counters vs the per-op formulas (exact integers), saved-tensor
// bytes vs the documented lists, and bad shapes rejected with the argument named.
//
// Gradient check: loss = Σ out ⊙ R for a fixed random R, so grad_out = R. The op's float32 backward is
// compared with d(loss)/d(input) of the float64 reference by central differences (h = 1e-6).
// Error measure: max |analytic − reference| / max |reference| over the whole tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>

#include <omp.h>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/cast.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/flash_attention.h"
#include "ops/ffn.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/norm.h"
#include "ops/residual.h"
#include "ops/rope.h"
#include "ops/rmsnorm.h"
#include "ops/activation.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using namespace testing_ref;

// Tolerances, stated once. Forward: float32 vs float64 reference. Backward: float32 analytic vs float64
// finite differences.
constexpr double kForwardTol = 2e-6;
constexpr double kGradTol = 1e-4;

void expect_count(const OpCount& got, int64_t matmul, int64_t other, int64_t read, int64_t written) {
  EXPECT_EQ(got.matmul_flops, matmul);
  EXPECT_EQ(got.other_flops, other);
  EXPECT_EQ(got.bytes_read, read);
  EXPECT_EQ(got.bytes_written, written);
}

class Ops : public ::testing::Test {
 protected:
  void SetUp() override {
    set_num_threads(2);
    counters().reset();
    counters().set_phase(Phase::forward);
  }
};

// ============================================================================================ embedding

struct EmbCase {
  int64_t b, t, v, d;
};
void PrintTo(const EmbCase& c, std::ostream* os) { *os << "B" << c.b << "_T" << c.t << "_V" << c.v << "_D" << c.d; }
class EmbeddingSweep : public Ops, public ::testing::WithParamInterface<EmbCase> {};

TEST_P(EmbeddingSweep, ForwardBackwardCounts) {
  const auto [b, t, v, d] = GetParam();
  const int64_t n = b * t;
  const auto ids = random_ids(n, v, 5);
  const Vec w = random_vec(v * d, 6);
  const Vec r = random_vec(n * d, 7);
  Tensor tokens = int_tensor(ids, {b, t}, "tokens");
  Tensor weight = tensor_from(w, {v, d}, Category::parameter, "tok_emb.weight");
  Tensor grad_w = Tensor::zeros({v, d}, Category::gradient, "tok_emb.weight.grad");

  Tensor out = embedding_forward(tokens, weight, "emb.out");
  EXPECT_EQ(out.shape(), (Shape{b, t, d}));
  auto ref_fwd = [&](const Vec& wx) {
    Vec y(static_cast<size_t>(n * d));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) y[i * d + j] = wx[ids[i] * d + j];
    return y;
  };
  EXPECT_EQ(rel_err(vec_from(out), ref_fwd(w)), 0.0);  // a copy is exact

  counters().set_phase(Phase::backward);
  Tensor grad_out = tensor_from(r, {b, t, d}, Category::temporary, "grad");
  embedding_backward(grad_w, grad_out, tokens);
  const Vec fd = fd_grad([&](const Vec& wx) { return dot(ref_fwd(wx), r); }, w);
  EXPECT_LE(rel_err(vec_from(grad_w), fd), kGradTol);

  expect_count(counters().get("embedding", Phase::forward), 0, 0, 4 * (n + n * d), 4 * n * d);
  expect_count(counters().get("embedding", Phase::backward), 0, n * d, 4 * (n + 2 * n * d), 4 * n * d);
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingSweep,
                         ::testing::Values(EmbCase{1, 1, 3, 16}, EmbCase{2, 3, 7, 5}, EmbCase{3, 17, 11, 9},
                                           EmbCase{2, 8, 2, 33}));

TEST_F(Ops, EmbeddingRejectsOutOfRangeTokens) {
  Tensor weight = Tensor::zeros({5, 4}, Category::parameter, "w");
  expect_invalid(
      [&] {
        embedding_forward(int_tensor({0, 5}, {1, 2}, "tok"), weight, "o");
      },
      {"token id at (b=0, t=1) is 5", "allowed range is [0, 4]"});
  expect_invalid(
      [&] {
        embedding_forward(int_tensor({-1, 0}, {2, 1}, "tok"), weight, "o");
      },
      {"(b=0, t=0) is -1", "[0, 4]"});
}

// ============================================================================================ linear

struct LinCase {
  int64_t n, in, out;
};
void PrintTo(const LinCase& c, std::ostream* os) { *os << "N" << c.n << "_IN" << c.in << "_OUT" << c.out; }
class LinearSweep : public Ops, public ::testing::WithParamInterface<LinCase> {};

TEST_P(LinearSweep, ForwardBackwardCountsAndAccumulation) {
  const auto [n, in, out] = GetParam();
  const Vec x = random_vec(n * in, 1), w = random_vec(out * in, 2), r = random_vec(n * out, 3);
  const Vec gw0 = random_vec(out * in, 4), gx0 = random_vec(n * in, 5);  // prior gradient contents
  Tensor xt = tensor_from(x, {n, in}, Category::activation, "x");
  Tensor wt = tensor_from(w, {out, in}, Category::parameter, "w");
  Tensor gw = tensor_from(gw0, {out, in}, Category::gradient, "w.grad");
  Tensor gx = tensor_from(gx0, {n, in}, Category::temporary, "x.grad");

  LinearSaved saved;
  Tensor y = linear_forward(saved, xt, wt, "y");
  EXPECT_LE(rel_err(vec_from(y), linear_ref(x, w, n, in, out)), kForwardTol);
  EXPECT_EQ(saved.x.data(), xt.data());  // saved by reference: no copy

  counters().set_phase(Phase::backward);
  Tensor gy = tensor_from(r, {n, out}, Category::temporary, "y.grad");
  linear_backward(gx, gw, gy, saved, wt, /*accumulate_grad_x=*/true);
  EXPECT_FALSE(saved.x.defined());  // freed as soon as used
  Vec fd_x = fd_grad([&](const Vec& xx) { return dot(linear_ref(xx, w, n, in, out), r); }, x);
  Vec fd_w = fd_grad([&](const Vec& ww) { return dot(linear_ref(x, ww, n, in, out), r); }, w);
  for (size_t i = 0; i < fd_x.size(); ++i) fd_x[i] += gx0[i];  // `+=` onto the prior contents
  for (size_t i = 0; i < fd_w.size(); ++i) fd_w[i] += gw0[i];
  EXPECT_LE(rel_err(vec_from(gx), fd_x), kGradTol);
  EXPECT_LE(rel_err(vec_from(gw), fd_w), kGradTol);

  // Independent arithmetic: forward one product; backward dX (accumulated) and dW (accumulated).
  expect_count(counters().get("linear", Phase::forward), 2 * n * in * out, 0, 4 * (n * in + out * in), 4 * n * out);
  const OpCount bwd = counters().get("linear", Phase::backward);
  EXPECT_EQ(bwd.calls, 2);
  expect_count(bwd, 2 * n * out * in + 2 * out * n * in, n * in + out * in,
               4 * ((n * out + out * in + n * in) + (out * n + n * in + out * in)), 4 * (n * in + out * in));
  EXPECT_EQ(bwd.flops(), linear_backward_count(n, in, out, true).flops());
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearSweep,
                         ::testing::Values(LinCase{1, 1, 1}, LinCase{3, 7, 5}, LinCase{17, 13, 9},
                                           LinCase{16, 24, 40}));

// Mixed precision: x, weight and grad_out as bf16 copies; out, grad_x, grad_weight float32. Against float64 on
// the same bf16 values, element by element within the float32 accumulation bound γ_(K+2)·(Σ|products| + |prior|)
// (bf16 products are exact in float32; runtime/matmul.h); counts follow each tensor's dtype.
TEST_P(LinearSweep, Bf16OperandsWithinTheRoundingBoundAndCountedAtTheirSizes) {
  const auto [n, in, out] = GetParam();
  auto bf16_tensor = [](const Vec& v, const Shape& shape, Category cat, const char* name) {
    Tensor t = Tensor::empty(shape, cat, name, DType::bf16);
    for (size_t i = 0; i < v.size(); ++i) t.data_bf16()[i] = to_bf16(static_cast<float>(v[i]));
    return t;
  };
  auto values = [](const Tensor& t) {
    Vec v(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = to_float(t.data_bf16()[i]);
    return v;
  };
  const Tensor x = bf16_tensor(random_vec(n * in, 1), {n, in}, Category::activation, "x.bf16");
  const Tensor w = bf16_tensor(random_vec(out * in, 2), {out, in}, Category::temporary, "w.bf16");
  const Tensor gy = bf16_tensor(random_vec(n * out, 3), {n, out}, Category::temporary, "y.grad.bf16");
  const Vec xv = values(x), wv = values(w), gyv = values(gy), gw0 = random_vec(out * in, 4);
  Tensor gw = tensor_from(gw0, {out, in}, Category::gradient, "w.grad");
  Tensor gx = Tensor::zeros({n, in}, Category::temporary, "x.grad");
  const double u = std::ldexp(1.0, -24);
  auto gamma = [&](int64_t k) { return (k + 2) * u / (1 - (k + 2) * u); };

  LinearSaved saved;
  const Tensor y = linear_forward(saved, x, w, "y");
  EXPECT_EQ(y.dtype(), DType::f32);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0, mag = 0;
      for (int64_t i = 0; i < in; ++i)
        sum += xv[r * in + i] * wv[o * in + i], mag += std::abs(xv[r * in + i] * wv[o * in + i]);
      ASSERT_LE(std::abs(y.data()[r * out + o] - sum), gamma(in) * mag) << r << " " << o;
    }
  counters().set_phase(Phase::backward);
  linear_backward(gx, gw, gy, saved, w, /*accumulate_grad_x=*/false);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < in; ++i) {
      double sum = 0, mag = 0;
      for (int64_t o = 0; o < out; ++o)
        sum += gyv[r * out + o] * wv[o * in + i], mag += std::abs(gyv[r * out + o] * wv[o * in + i]);
      ASSERT_LE(std::abs(gx.data()[r * in + i] - sum), gamma(out) * mag);
    }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double sum = gw0[o * in + i], mag = std::abs(gw0[o * in + i]);
      for (int64_t r = 0; r < n; ++r)
        sum += gyv[r * out + o] * xv[r * in + i], mag += std::abs(gyv[r * out + o] * xv[r * in + i]);
      ASSERT_LE(std::abs(gw.data()[o * in + i] - sum), gamma(n) * mag + std::abs(sum) * u);
    }
  LinearDTypes t;
  t.x = t.weight = t.grad_out = DType::bf16;
  const OpCount fwd = counters().get("linear", Phase::forward), bwd = counters().get("linear", Phase::backward);
  const OpCount fwd_expected = linear_forward_count(n, in, out, t),
                bwd_expected = linear_backward_count(n, in, out, false, t);
  // Independent arithmetic: 2-byte x, w, dY; 4-byte y, dX, dW.
  expect_count(fwd, 2 * n * in * out, 0, 2 * (n * in + out * in), 4 * n * out);
  expect_count(bwd, 4 * n * in * out, out * in, 2 * (n * out + out * in) + 2 * (n * out + n * in) + 4 * out * in,
               4 * (n * in + out * in));
  expect_count(fwd_expected, fwd.matmul_flops, fwd.other_flops, fwd.bytes_read, fwd.bytes_written);
  expect_count(bwd_expected, bwd.matmul_flops, bwd.other_flops, bwd.bytes_read, bwd.bytes_written);
}

// With a bias: y = x·Wᵀ + b against float64, db += Σ_rows dY against central differences of the same reference
// (onto prior contents, PyTorch's accumulate), x with leading dims (B, T, IN); counts by independent arithmetic.
TEST_P(LinearSweep, BiasForwardBackwardAndCounts) {
  const auto [n, in, out] = GetParam();
  const Vec x = random_vec(n * in, 1), w = random_vec(out * in, 2), bias = random_vec(out, 6),
            r = random_vec(n * out, 3);
  const Vec gb0 = random_vec(out, 7);
  Tensor xt = tensor_from(x, {1, n, in}, Category::activation, "x");
  Tensor wt = tensor_from(w, {out, in}, Category::parameter, "w");
  Tensor bt = tensor_from(bias, {out}, Category::parameter, "b");
  Tensor gw = Tensor::zeros({out, in}, Category::gradient, "w.grad");
  Tensor gb = tensor_from(gb0, {out}, Category::gradient, "b.grad");
  Tensor gx = Tensor::empty({1, n, in}, Category::temporary, "x.grad");
  auto ref = [&](const Vec& xx, const Vec& bb) {
    Vec y = linear_ref(xx, w, n, in, out);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y[i * out + o] += bb[o];
    return y;
  };
  LinearSaved saved;
  Tensor y = linear_forward(saved, xt, wt, "y", DType::f32, Category::activation, "linear", bt);
  EXPECT_LE(rel_err(vec_from(y), ref(x, bias)), kForwardTol);
  counters().set_phase(Phase::backward);
  linear_backward(gx, gw, tensor_from(r, {1, n, out}, Category::temporary, "y.grad"), saved, wt, false, "linear", gb);
  Vec fd_b = fd_grad([&](const Vec& bb) { return dot(ref(x, bb), r); }, bias);
  for (size_t i = 0; i < fd_b.size(); ++i) fd_b[i] += gb0[i];
  EXPECT_LE(rel_err(vec_from(gb), fd_b), kGradTol);
  EXPECT_LE(rel_err(vec_from(gx), fd_grad([&](const Vec& xx) { return dot(ref(xx, bias), r); }, x)), kGradTol);
  // Forward: the product and N·OUT bias adds inside the same call, reading the OUT bias values; backward: dX, dW and
  // the bias sums (N·OUT adds, reading dY and db, writing db).
  expect_count(counters().get("linear", Phase::forward), 2 * n * in * out, n * out, 4 * (n * in + out * in + out),
               4 * n * out);
  const OpCount bwd = counters().get("linear", Phase::backward);
  EXPECT_EQ(bwd.calls, 3);
  expect_count(bwd, 4 * n * in * out, out * in + n * out,
               4 * ((n * out + out * in) + (n * out + n * in + out * in) + (n * out + out)),
               4 * (n * in + out * in + out));
  const OpCount f = linear_forward_count(n, in, out, {}, true), g = linear_backward_count(n, in, out, false, {}, true);
  expect_count(counters().get("linear", Phase::forward), f.matmul_flops, f.other_flops, f.bytes_read, f.bytes_written);
  expect_count(bwd, g.matmul_flops, g.other_flops, g.bytes_read, g.bytes_written);

  // bf16 operands with a bf16 bias (amp-bf16's copies) and a bf16 bias gradient: within bf16's rounding.
  auto bf16_of = [](const Tensor& t, const char* name) {
    Tensor c = Tensor::empty(t.shape(), t.category(), name, DType::bf16);
    for (int64_t i = 0; i < t.numel(); ++i) c.data_bf16()[i] = to_bf16(t.data()[i]);
    return c;
  };
  LinearSaved s16;
  const Tensor y16 = linear_forward(s16, bf16_of(xt, "x16"), bf16_of(wt, "w16"), "y16", DType::bf16,
                                    Category::activation, "linear", bf16_of(bt, "b16"));
  Vec y16v(static_cast<size_t>(n * out));
  for (size_t i = 0; i < y16v.size(); ++i) y16v[i] = to_float(y16.data_bf16()[i]);
  EXPECT_LE(rel_err(y16v, ref(x, bias)), 2e-2);
  Tensor gb16 = Tensor::zeros({out}, Category::gradient, "b16.grad", DType::bf16);
  bias_backward(gb16, bf16_of(tensor_from(r, {n, out}, Category::temporary, "gy"), "gy16"), "linear");
  Vec sums(static_cast<size_t>(out), 0.0), got(static_cast<size_t>(out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) sums[o] += r[i * out + o];
  for (int64_t o = 0; o < out; ++o) got[o] = to_float(gb16.data_bf16()[o]);
  EXPECT_LE(rel_err(got, sums), 2e-2);
}

TEST_F(Ops, LinearRejectsABiasOfTheWrongShapeOrDtype) {
  LinearSaved saved;
  Tensor x = Tensor::zeros({4, 3}, Category::activation, "x");
  Tensor w = Tensor::zeros({2, 3}, Category::parameter, "w");
  Tensor b3 = Tensor::zeros({3}, Category::parameter, "layers.0.attn.wq.bias");
  expect_invalid([&] { linear_forward(saved, x, w, "y", DType::f32, Category::activation, "linear", b3); },
                 {"layers.0.attn.wq.bias", "N = 2"});
  Tensor b16 = Tensor::zeros({2}, Category::parameter, "b16", DType::bf16);
  expect_invalid([&] { linear_forward(saved, x, w, "y", DType::f32, Category::activation, "linear", b16); },
                 {"b16", "one dtype"});
}

TEST_F(Ops, LinearGradXOverwriteMode) {
  const Vec x = random_vec(4 * 3, 1), w = random_vec(2 * 3, 2), r = random_vec(4 * 2, 3);
  Tensor xt = tensor_from(x, {4, 3}, Category::activation, "x");
  Tensor wt = tensor_from(w, {2, 3}, Category::parameter, "w");
  Tensor gw = Tensor::zeros({2, 3}, Category::gradient, "gw");
  Tensor gx = Tensor::empty({4, 3}, Category::temporary, "gx");
  gx.fill(1e30f);  // garbage that `=` must overwrite
  LinearSaved saved;
  linear_forward(saved, xt, wt, "y");
  linear_backward(gx, gw, tensor_from(r, {4, 2}, Category::temporary, "gy"), saved, wt, false);
  const Vec fd_x = fd_grad([&](const Vec& xx) { return dot(linear_ref(xx, w, 4, 3, 2), r); }, x);
  EXPECT_LE(rel_err(vec_from(gx), fd_x), kGradTol);
}

TEST_F(Ops, LinearRejectsMismatchedFeatures) {
  LinearSaved saved;
  Tensor x = Tensor::zeros({4, 3}, Category::activation, "x");
  Tensor w = Tensor::zeros({2, 5}, Category::parameter, "layers.0.attn.wq.weight");
  expect_invalid([&] { linear_forward(saved, x, w, "y"); },
                 {"x (4, 3) has 3 features", "expects IN = 5", "layers.0.attn.wq.weight"});
}

// ============================================================================================ rmsnorm

struct NormCase {
  int64_t n, d;
};
void PrintTo(const NormCase& c, std::ostream* os) { *os << "N" << c.n << "_D" << c.d; }
class RmsnormSweep : public Ops, public ::testing::WithParamInterface<NormCase> {};

TEST_P(RmsnormSweep, ForwardBackwardCountsSaved) {
  const auto [n, d] = GetParam();
  const double eps = 1e-5;
  const Vec x = random_vec(n * d, 1, 2.0), g = random_vec(d, 2), r = random_vec(n * d, 3);
  Vec g_shift = g;
  for (double& v : g_shift) v = static_cast<float>(v + 1.0);
  const Vec gg0 = random_vec(d, 4);
  Tensor xt = tensor_from(x, {n, d}, Category::activation, "x");
  Tensor gt = tensor_from(g_shift, {d}, Category::parameter, "norm.weight");
  Tensor ggrad = tensor_from(gg0, {d}, Category::gradient, "norm.weight.grad");

  const int64_t live_before = tracker().live_bytes_with_prefix("t.norm.");
  RmsnormSaved saved;
  Tensor y = rmsnorm_forward(saved, xt, gt, static_cast<float>(eps), "t.norm");
  EXPECT_LE(rel_err(vec_from(y), rmsnorm_ref(x, g_shift, n, d, eps)), kForwardTol);
  // Documented: out (N, D) and rstd (N), both activations; x is only referenced.
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.norm.rstd") - live_before, aligned_size(4 * n));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.norm.out"), aligned_size(4 * n * d));
  EXPECT_EQ(saved.rstd.category(), Category::activation);
  EXPECT_EQ(saved.x.data(), xt.data());

  counters().set_phase(Phase::backward);
  Tensor gx = Tensor::empty({n, d}, Category::temporary, "gx");
  rmsnorm_backward(gx, ggrad, tensor_from(r, {n, d}, Category::temporary, "gy"), saved, gt, false);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.norm.rstd"), 0);  // freed by backward
  const Vec fd_x = fd_grad([&](const Vec& xx) { return dot(rmsnorm_ref(xx, g_shift, n, d, eps), r); }, x);
  Vec fd_g = fd_grad([&](const Vec& gv) { return dot(rmsnorm_ref(x, gv, n, d, eps), r); }, g_shift);
  for (size_t i = 0; i < fd_g.size(); ++i) fd_g[i] += gg0[i];
  EXPECT_LE(rel_err(vec_from(gx), fd_x), kGradTol);
  EXPECT_LE(rel_err(vec_from(ggrad), fd_g), kGradTol);

  expect_count(counters().get("rmsnorm", Phase::forward), 0, n * (4 * d + 4), 4 * (n * d + d), 4 * (n * d + n));
  expect_count(counters().get("rmsnorm", Phase::backward), 0, n * (10 * d + 4), 4 * (2 * n * d + n + 2 * d),
               4 * (n * d + d));
}

// D = 1 is left out on purpose: there y = sign(x)·g and the true dx is O(eps), so any float32 backward
// (PyTorch's included) returns rounding noise of the two cancelling terms.
INSTANTIATE_TEST_SUITE_P(Shapes, RmsnormSweep,
                         ::testing::Values(NormCase{1, 2}, NormCase{2, 3}, NormCase{4, 7}, NormCase{17, 33},
                                           NormCase{3, 64}));

TEST_F(Ops, RmsnormAccumulatesIntoGradX) {
  const int64_t n = 3, d = 5;
  const Vec x = random_vec(n * d, 1), g = random_vec(d, 2), r = random_vec(n * d, 3), gx0 = random_vec(n * d, 4);
  Tensor xt = tensor_from(x, {n, d}, Category::activation, "x");
  Tensor gt = tensor_from(g, {d}, Category::parameter, "g");
  Tensor gg = Tensor::zeros({d}, Category::gradient, "gg");
  Tensor gx = tensor_from(gx0, {n, d}, Category::temporary, "gx");
  RmsnormSaved saved;
  rmsnorm_forward(saved, xt, gt, 1e-5f, "n");
  counters().set_phase(Phase::backward);
  rmsnorm_backward(gx, gg, tensor_from(r, {n, d}, Category::temporary, "gy"), saved, gt, true);
  Vec fd_x = fd_grad([&](const Vec& xx) { return dot(rmsnorm_ref(xx, g, n, d, 1e-5), r); }, x);
  for (size_t i = 0; i < fd_x.size(); ++i) fd_x[i] += gx0[i];
  EXPECT_LE(rel_err(vec_from(gx), fd_x), kGradTol);
  EXPECT_EQ(counters().get("rmsnorm", Phase::forward).other_flops, n * (4 * d + 4));
  EXPECT_EQ(counters().get("rmsnorm", Phase::backward).other_flops, n * (10 * d + 4) + n * d);  // + the `+=`
}

TEST_F(Ops, RmsnormRejectsBadShapesAndEps) {
  RmsnormSaved saved;
  Tensor x = Tensor::zeros({4, 6}, Category::activation, "x");
  Tensor g = Tensor::zeros({5}, Category::parameter, "final_norm.weight");
  expect_invalid([&] { rmsnorm_forward(saved, x, g, 1e-5f, "n"); }, {"x 'x' (4, 6)", "last dim 5"});
  Tensor g6 = Tensor::zeros({6}, Category::parameter, "g6");
  expect_invalid([&] { rmsnorm_forward(saved, x, g6, 0.0f, "n"); }, {"eps is 0", "allowed range is (0, inf)"});
}

// ============================================================================================ layernorm

// LayerNorm with and without β, against float64 (forward) and central differences (dx, dγ, dβ; dX written and
// accumulated); the saved statistics, their frees, the counts by the documented formulas.
struct LayernormCase {
  int64_t n, d;
  bool bias, accumulate;
};
void PrintTo(const LayernormCase& c, std::ostream* os) {
  *os << "N" << c.n << "_D" << c.d << (c.bias ? "_bias" : "") << (c.accumulate ? "_acc" : "");
}
class LayernormSweep : public Ops, public ::testing::WithParamInterface<LayernormCase> {};

TEST_P(LayernormSweep, ForwardBackwardCountsSaved) {
  const auto [n, d, with_bias, acc] = GetParam();
  const double eps = 1e-5;
  // A mean far from 0 (x + 3): the two-pass variance has no cancellation to lose digits to.
  Vec x = random_vec(n * d, 1, 2.0);
  for (double& v : x) v = static_cast<float>(v + 3.0);
  Vec g = random_vec(d, 2);
  for (double& v : g) v = static_cast<float>(v + 1.0);
  const Vec b = with_bias ? random_vec(d, 3) : Vec{}, r = random_vec(n * d, 4), gg0 = random_vec(d, 5);
  const Vec gb0 = random_vec(d, 6), gx0 = acc ? random_vec(n * d, 7) : Vec(static_cast<size_t>(n * d), 0.0);
  Tensor xt = tensor_from(x, {n, d}, Category::activation, "x");
  Tensor gt = tensor_from(g, {d}, Category::parameter, "ln.weight");
  Tensor bt = with_bias ? tensor_from(b, {d}, Category::parameter, "ln.bias") : Tensor();
  Tensor ggrad = tensor_from(gg0, {d}, Category::gradient, "ln.weight.grad");
  Tensor bgrad = with_bias ? tensor_from(gb0, {d}, Category::gradient, "ln.bias.grad") : Tensor();

  counters().reset();
  LayernormSaved saved;
  Tensor y = layernorm_forward(saved, xt, gt, bt, static_cast<float>(eps), "t.ln");
  EXPECT_LE(rel_err(vec_from(y), layernorm_ref(x, g, b, n, d, eps)), kForwardTol);
  // Documented: out (N, D), mean and rstd (N each), activations; x only referenced.
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ln.mean"), aligned_size(4 * n));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ln.rstd"), aligned_size(4 * n));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ln.out"), aligned_size(4 * n * d));
  EXPECT_EQ(saved.x.data(), xt.data());
  for (int64_t i = 0; i < n; ++i) {
    double mu = 0;
    for (int64_t j = 0; j < d; ++j) mu += x[i * d + j] / static_cast<double>(d);
    EXPECT_NEAR(saved.mean.data()[i], mu, 1e-6 * std::fabs(mu));
  }

  counters().set_phase(Phase::backward);
  Tensor gx = tensor_from(gx0, {n, d}, Category::temporary, "gx");
  layernorm_backward(gx, ggrad, bgrad, tensor_from(r, {n, d}, Category::temporary, "gy"), saved, gt, acc);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ln.mean") + tracker().live_bytes_with_prefix("t.ln.rstd"), 0);
  Vec fd_x = fd_grad([&](const Vec& xx) { return dot(layernorm_ref(xx, g, b, n, d, eps), r); }, x);
  for (size_t i = 0; i < fd_x.size(); ++i) fd_x[i] += gx0[i];
  Vec fd_g = fd_grad([&](const Vec& gv) { return dot(layernorm_ref(x, gv, b, n, d, eps), r); }, g);
  for (size_t i = 0; i < fd_g.size(); ++i) fd_g[i] += gg0[i];
  EXPECT_LE(rel_err(vec_from(gx), fd_x), kGradTol);
  EXPECT_LE(rel_err(vec_from(ggrad), fd_g), kGradTol);
  if (with_bias) {
    Vec fd_b = fd_grad([&](const Vec& bv) { return dot(layernorm_ref(x, g, bv, n, d, eps), r); }, b);
    for (size_t i = 0; i < fd_b.size(); ++i) fd_b[i] += gb0[i];
    EXPECT_LE(rel_err(vec_from(bgrad), fd_b), kGradTol);
  }
  const int64_t nb = with_bias ? 1 : 0, na = acc ? 1 : 0;
  expect_count(counters().get("layernorm", Phase::forward), 0, n * (7 * d + 5 + nb * d), 4 * (n * d + d + nb * d),
               4 * (n * d + 2 * n));
  expect_count(counters().get("layernorm", Phase::backward), 0, n * (17 * d + 2) + (nb + na) * n * d,
               4 * (2 * n * d + 2 * n + na * n * d + 2 * d + nb * d), 4 * (n * d + d + nb * d));
}

// D ≤ 2 is left out: x̂ is 0 (D = 1) or ±1 (D = 2) whatever x is, so the true dx is 0 and any float32 backward returns
// the rounding noise of cancelling terms.
INSTANTIATE_TEST_SUITE_P(Shapes, LayernormSweep,
                         ::testing::Values(LayernormCase{1, 3, false, false}, LayernormCase{2, 3, true, false},
                                           LayernormCase{4, 7, true, true}, LayernormCase{17, 33, false, true},
                                           LayernormCase{3, 300, true, false}));

TEST_F(Ops, LayernormRejectsBadShapesBiasAndEps) {
  LayernormSaved saved;
  Tensor x = Tensor::zeros({4, 6}, Category::activation, "x");
  Tensor g5 = Tensor::zeros({5}, Category::parameter, "g5"), g6 = Tensor::zeros({6}, Category::parameter, "g6");
  expect_invalid([&] { layernorm_forward(saved, x, g5, Tensor(), 1e-5f, "n"); }, {"x 'x' (4, 6)", "last dim 5"});
  expect_invalid([&] { layernorm_forward(saved, x, g6, g5, 1e-5f, "n"); }, {"bias 'g5' must match weight (6,)"});
  expect_invalid([&] { layernorm_forward(saved, x, g6, Tensor(), 0.0f, "n"); }, {"eps is 0", "(0, inf)"});
  NormSaved norm;
  expect_invalid([&] { norm_forward(NormKind::rmsnorm, norm, x, g6, g6, 1e-5f, "n"); }, {"'n' has no bias"});
}

// ============================================================================================ attention

struct AttnCase {
  int64_t b, t, d, h, kv = 0;  // d: q's width H·d_k; kv: key/value heads (0: = h)
  int64_t window = 0;          // sliding window (0: none)
  float cap = 0.0f;            // soft-capping (0: none)
  float alibi = 0.0f;          // ALiBi's alibi_bias_max (0: none)
};
void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "B" << c.b << "_T" << c.t << "_D" << c.d << "_H" << c.h << "_KV" << (c.kv > 0 ? c.kv : c.h) << "_W" << c.window
      << "_cap" << c.cap << "_alibi" << c.alibi;
}
class AttentionSweep : public Ops, public ::testing::WithParamInterface<AttnCase> {};

TEST_P(AttentionSweep, ForwardBackwardCountsSaved) {
  const AttnCase p = GetParam();
  const int64_t b = p.b, t = p.t, d = p.d, h = p.h, kvh = p.kv > 0 ? p.kv : p.h;
  const int64_t dk = d / h, bh = b * h, dkv = kvh * dk, capped = p.cap > 0 ? 1 : 0, alibi = p.alibi > 0 ? 1 : 0;
  int64_t visible = 0;  // the (query, key) pairs a head computes: row i sees max(0, i − W + 1) … i
  for (int64_t i = 0; i < t; ++i) visible += p.window > 0 ? std::min(i + 1, p.window) : i + 1;
  const Vec q = random_vec(b * t * d, 1), k = random_vec(b * t * dkv, 2), v = random_vec(b * t * dkv, 3);
  const Vec r = random_vec(b * t * d, 4);
  Tensor qt = tensor_from(q, {b, t, d}, Category::activation, "q");
  Tensor kt = tensor_from(k, {b, t, dkv}, Category::activation, "k");
  Tensor vt = tensor_from(v, {b, t, dkv}, Category::activation, "v");

  AttentionSaved saved;
  Tensor ctx = attention_forward(saved, qt, kt, vt, h, kvh, "t.attn", {p.window, p.cap, p.alibi});
  EXPECT_LE(rel_err(vec_from(ctx), attention_ref(q, k, v, b, t, d, h, kvh, p.window, p.cap, p.alibi)), kForwardTol);
  // Saved: probs (B, H, T, T) (and, capped, tanh of the scores) are the only new saved tensors; ctx is the output;
  // no K/V head is repeated.
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn.probs"), aligned_size(4 * bh * t * t));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn.tanh"), capped * aligned_size(4 * bh * t * t));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn."),
            (1 + capped) * aligned_size(4 * bh * t * t) + aligned_size(4 * b * t * d));
  // Outside the mask probs (and tanh) hold exact zeros; each row sums to 1; |tanh| ≤ 1 inside.
  for (int64_t row = 0; row < bh * t; ++row) {
    const int64_t i = row % t;
    double s = 0;
    for (int64_t j = 0; j < t; ++j) {
      const float pr = saved.probs.data()[row * t + j];
      const bool masked = j > i || (p.window > 0 && i - j >= p.window);
      if (masked) {
        EXPECT_EQ(pr, 0.0f);
      }
      if (capped) {
        const float u = saved.tanh.data()[row * t + j];
        EXPECT_TRUE(masked ? u == 0.0f : std::abs(u) <= 1.0f);
      }
      s += pr;
    }
    EXPECT_NEAR(s, 1.0, 1e-6);
  }

  counters().set_phase(Phase::backward);
  Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq");
  Tensor gk = Tensor::empty({b, t, dkv}, Category::temporary, "gk");
  Tensor gv = Tensor::empty({b, t, dkv}, Category::temporary, "gv");
  tracker().reset_peak_stats();
  const int64_t temp_before = tracker().stats()[Category::temporary].allocated_bytes.current;
  attention_backward(gq, gk, gv, tensor_from(r, {b, t, d}, Category::temporary, "gctx"), saved);
  // Backward's only temporary is grad_probs (B, H, T, T) (+ any oneDNN scratchpad, also temporary).
  EXPECT_GE(tracker().stats()[Category::temporary].allocated_bytes.peak - temp_before,
            aligned_size(4 * bh * t * t) + aligned_size(4 * b * t * d));
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn.probs"), 0);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.attn.tanh"), 0);
  EXPECT_FALSE(saved.q.defined() || saved.k.defined() || saved.v.defined());

  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return dot(attention_ref(qq, kk, vv, b, t, d, h, kvh, p.window, p.cap, p.alibi), r);
  };
  EXPECT_LE(rel_err(vec_from(gq), fd_grad([&](const Vec& x) { return loss(x, k, v); }, q)), kGradTol);
  EXPECT_LE(rel_err(vec_from(gk), fd_grad([&](const Vec& x) { return loss(q, x, v); }, k)), kGradTol);
  EXPECT_LE(rel_err(vec_from(gv), fd_grad([&](const Vec& x) { return loss(q, k, x); }, v)), kGradTol);

  // Forward: QKᵀ (scaled, unless d_k = 1: 1/√1 is no scale) + softmax (capped: s / c, tanh, c·t first; ALiBi:
  // m·(j − i) and its add in the max pass and again in the exp pass) + PV, per query head (each reads its group's K
  // and V heads once: the g calls of a product read K g times in all).
  const int64_t scaled = dk == 1 ? 0 : 1;
  expect_count(counters().get("attention", Phase::forward), bh * (2 * t * t * dk + 2 * t * t * dk),
               bh * (scaled * t * t + (5 + 3 * capped + 4 * alibi) * visible),
               4 * bh * ((t * dk + dk * t) + visible + (t * t + t * dk)),
               4 * bh * (t * t + (1 + capped) * t * t + t * dk));
  // Backward: dP, dV, softmax backward, dQ (scaled), dK (scaled); the B·(H − KV) calls after a group's first add
  // into dK and dV (T·d_k FLOPs each, reading the destination).
  const int64_t shared = b * (h - kvh);
  expect_count(counters().get("attention", Phase::backward), bh * 4 * (2 * t * t * dk),
               bh * ((4 + 3 * capped) * visible + scaled * 2 * t * dk) + shared * 2 * t * dk,
               4 * bh * ((t * dk + dk * t) + (t * t + t * dk) + (2 + capped) * visible + 2 * (t * t + t * dk)) +
                   4 * shared * 2 * t * dk,
               4 * bh * (t * t + t * dk + t * t + t * dk + t * dk));
  // The declared counts (what benchmarks and estimators read) are what ran, field by field.
  const AttentionShape sh{b, t, h, kvh, dk, p.window, p.cap, p.alibi};
  const OpCount f = attention_forward_count(sh), g = attention_backward_count(sh);
  expect_count(counters().get("attention", Phase::forward), f.matmul_flops, f.other_flops, f.bytes_read,
               f.bytes_written);
  expect_count(counters().get("attention", Phase::backward), g.matmul_flops, g.other_flops, g.bytes_read,
               g.bytes_written);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionSweep,
                         ::testing::Values(AttnCase{1, 1, 4, 1}, AttnCase{2, 5, 6, 3}, AttnCase{1, 17, 12, 2},
                                           AttnCase{2, 4, 8, 4}, AttnCase{1, 9, 15, 3}, AttnCase{2, 6, 3, 3},
                                           AttnCase{2, 5, 6, 3, 1}, AttnCase{2, 7, 16, 4, 2}, AttnCase{1, 9, 12, 6, 3},
                                           AttnCase{1, 4, 4, 4, 1}, AttnCase{1, 9, 12, 2, 0, 3},
                                           AttnCase{2, 7, 16, 4, 2, 1}, AttnCase{1, 6, 6, 3, 0, 6},
                                           AttnCase{2, 5, 6, 3, 0, 0, 0.5f}, AttnCase{1, 9, 12, 6, 3, 4, 0.8f},
                                           // ALiBi: 8 heads (powers of two), 3 and 6 (interleaved slopes), with a
                                           // window, with groups, MPT's bias_max 8 and a steeper 16
                                           AttnCase{1, 9, 16, 8, 0, 0, 0, 8}, AttnCase{2, 7, 6, 3, 0, 0, 0, 8},
                                           AttnCase{1, 11, 12, 6, 2, 4, 0, 16}, AttnCase{1, 9, 12, 6, 3, 0, 0, 8}));

// MPT's slopes (Hugging Face's build_mpt_alibi_tensor) against BLOOM's construction written out in float64: equal
// for every head count when bias_max = 8; 8 heads give 1/2 … 1/256; 12 heads interleave 16's slopes.
TEST_F(Ops, AlibiSlopesAreMptsAndBlooms) {
  for (int64_t h : {1, 2, 3, 5, 6, 8, 12, 16, 20, 32, 40, 71}) {
    const Vec want = alibi_slopes_ref(h, 8.0);
    for (int64_t i = 0; i < h; ++i)
      EXPECT_EQ(alibi_slope(i, h, 8.0f), static_cast<float>(want[static_cast<size_t>(i)])) << h << " heads, head " << i;
  }
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(alibi_slope(i, 8, 8.0f), std::ldexp(1.0f, -static_cast<int>(i + 1)));
  EXPECT_EQ(alibi_slope(8, 12, 8.0f), static_cast<float>(std::exp2(-0.5)));   // k = 1 of 16, after the 8 even k
  EXPECT_EQ(alibi_slope(11, 12, 8.0f), static_cast<float>(std::exp2(-3.5)));  // k = 7
  EXPECT_EQ(alibi_slope(0, 4, 16.0f), 0.0625f);                               // 2^(−16·1/4)
}

TEST_F(Ops, AttentionRejectsBadHeads) {
  Tensor q = Tensor::zeros({1, 4, 10}, Category::activation, "q");
  AttentionSaved saved;
  expect_invalid([&] { attention_forward(saved, q, q, q, 3, 3, "a"); },
                 {"q's width 10 is not divisible by num_heads 3"});
  expect_invalid([&] { attention_forward(saved, q, q, q, 0, 1, "a"); }, {"num_heads is 0", "[1, 10]"});
  Tensor k = Tensor::zeros({1, 5, 10}, Category::activation, "k");
  expect_invalid([&] { attention_forward(saved, q, k, q, 2, 2, "a"); }, {"must be contiguous (B, T, width)"});
  expect_invalid([&] { attention_forward(saved, q, q, q, 5, 2, "a"); },
                 {"num_kv_heads is 2", "divisor of num_heads 5"});
  expect_invalid([&] { attention_forward(saved, q, q, q, 5, 1, "a"); }, {"k and v have width 10", "1 × 2"});
  expect_invalid(
      [&] {
        attention_forward(saved, q, q, q, 2, 2, "a", {0, 0.0f, -1.0f});
      },
      {"alibi_bias_max is -1", "0 (no ALiBi) or a finite value > 0"});
  expect_invalid(
      [&] {
        attention_forward(saved, q, q, q, 2, 2, "a", {0, 0.0f, std::nanf("")});
      },
      {"alibi_bias_max is nan"});
  expect_invalid(
      [&] {
        attention_forward(saved, q, q, q, 2, 2, "a", {0, 30.0f, 8.0f});
      },
      {"soft-capping (30) and ALiBi (alibi_bias_max 8)"});
}

// ============================================================================================ silu / swiglu

// ============================================================================================ rope

// The tables against float64; the rotation against rope_ref (float64) forward and backward, in place; backward equal
// to the finite differences of the forward's linear map; counts by arithmetic; refusals.
TEST_F(Ops, RopeRotatesInPlaceAndBackwardIsItsTranspose) {
  for (const auto [b, t, heads, dk] :
       {std::array<int64_t, 4>{2, 7, 3, 8}, std::array<int64_t, 4>{1, 5, 1, 2}, std::array<int64_t, 4>{1, 33, 2, 6}}) {
    SCOPED_TRACE(testing::Message() << "B" << b << " T" << t << " heads " << heads << " d_k " << dk);
    const double theta = 500.0;
    counters().reset();
    const int64_t activations_before = tracker().stats()[Category::activation].allocated_bytes.current;
    const RopeTables tables = rope_tables(t, dk, RopeFrequencies{theta});
    EXPECT_EQ(tracker().stats()[Category::activation].allocated_bytes.current - activations_before,
              2 * aligned_size(4 * t * dk / 2));
    EXPECT_EQ(tracker().live_bytes_with_prefix("rope.cos"), aligned_size(4 * t * dk / 2));
    EXPECT_EQ(tracker().live_bytes_with_prefix("rope.sin"), aligned_size(4 * t * dk / 2));
    for (int64_t p = 0; p < t; ++p)
      for (int64_t i = 0; i < dk / 2; ++i) {
        const double angle = static_cast<double>(p) * std::pow(theta, -2.0 * static_cast<double>(i) / dk);
        EXPECT_NEAR(tables.cos.data()[p * dk / 2 + i], std::cos(angle), 1e-7);
        EXPECT_NEAR(tables.sin.data()[p * dk / 2 + i], std::sin(angle), 1e-7);
      }
    const int64_t n = b * t, w = heads * dk;
    const Vec x = random_vec(n * w, 5), r = random_vec(n * w, 6);
    Tensor xt = tensor_from(x, {b, t, w}, Category::activation, "x");
    const int64_t bytes_before = tracker().stats().total.allocated_bytes.current;
    rope_forward(xt, heads, tables);
    EXPECT_EQ(tracker().stats().total.allocated_bytes.current, bytes_before) << "in place: nothing allocated";
    EXPECT_LE(rel_err(vec_from(xt), rope_ref(x, n, t, heads, dk, theta)), kForwardTol);
    Tensor gt = tensor_from(r, {b, t, w}, Category::temporary, "g");
    rope_backward(gt, heads, tables);
    const Vec fd = fd_grad([&](const Vec& xx) { return dot(rope_ref(xx, n, t, heads, dk, theta), r); }, x);
    EXPECT_LE(rel_err(vec_from(gt), fd), kGradTol);
    EXPECT_LE(rel_err(vec_from(gt), rope_ref(r, n, t, heads, dk, theta, -1)), kForwardTol);
    // Counts: tables 3 per entry + 2 per inverse frequency; each rotation 3 per element, reads x and the tables.
    const OpCount c = counters().get("rope", Phase::forward);
    EXPECT_EQ(c.calls, 3);
    EXPECT_EQ(c.other_flops, 3 * t * dk / 2 + dk + 2 * 3 * n * w);
    EXPECT_EQ(c.bytes_read, 2 * (4 * n * w + 2 * 4 * t * dk / 2));
    EXPECT_EQ(c.bytes_written, 2 * 4 * t * dk / 2 + 2 * 4 * n * w);
  }
  const RopeTables tables = rope_tables(4, 6, RopeFrequencies{});
  Tensor x = Tensor::zeros({1, 5, 12}, Category::activation, "x");
  expect_invalid([&] { rope_forward(x, 2, tables); }, {"heads of 6 over 5 positions", "over 4"});
  Tensor y = Tensor::zeros({1, 4, 12}, Category::activation, "y");
  expect_invalid([&] { rope_forward(y, 3, tables); }, {"heads of 4", "tables are for heads of 6"});
  expect_invalid([&] { rope_tables(4, 5, RopeFrequencies{}); }, {"head_dim is 5", "even"});
  expect_invalid([&] { rope_tables(4, 6, RopeFrequencies{0.0}); }, {"rope_theta is 0"});
  expect_invalid([&] { rope_tables(4, 6, RopeFrequencies{std::nan("")}); }, {"rope_theta is nan"});
  expect_invalid(
      [&] {
        rope_tables(4, 6, RopeFrequencies{1e4, RopeScaling::llama3, 8, 4, 1});
      },
      {"0 < rope_low_freq_factor < rope_high_freq_factor"});
}

// Frequency scaling against Hugging Face's formulas written out here (modeling_rope_utils: linear divides by the
// factor; _compute_llama3_parameters with Llama 3.1's values), and the FLOPs each band executes.
TEST_F(Ops, RopeScalingFrequenciesLinearAndLlama3) {
  const int64_t dk = 128;
  const double theta = 500000, pi = std::acos(-1.0);
  const std::vector<double> plain = rope_inverse_frequencies(dk, RopeFrequencies{theta});
  int64_t flops = 0;
  const std::vector<double> linear = rope_inverse_frequencies(dk, {theta, RopeScaling::linear, 4.0}, &flops);
  EXPECT_EQ(flops, 3 * dk / 2);
  const RopeFrequencies l31{theta, RopeScaling::llama3, 8.0, 1.0, 4.0, 8192};
  const std::vector<double> llama3 = rope_inverse_frequencies(dk, l31, &flops);
  int64_t kept = 0, scaled = 0, blended = 0;
  for (int64_t i = 0; i < dk / 2; ++i) {
    const double f = 1.0 / std::pow(theta, 2.0 * static_cast<double>(i) / dk);
    EXPECT_DOUBLE_EQ(plain[i], f);
    EXPECT_DOUBLE_EQ(linear[i], f / 4.0);
    const double wavelen = 2 * pi / f, low_wavelen = 8192 / 1.0, high_wavelen = 8192 / 4.0;
    double want = f;
    if (wavelen < high_wavelen) {
      ++kept;
    } else if (wavelen > low_wavelen) {
      want = f / 8.0, ++scaled;
    } else {
      const double smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0);
      want = (1 - smooth) * f / 8.0 + smooth * f, ++blended;
    }
    EXPECT_NEAR(llama3[i], want, 1e-15 * f) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(scaled, 0);
  EXPECT_GT(blended, 0);
  EXPECT_EQ(flops, 3 * dk / 2 + scaled + 8 * blended);
  EXPECT_EQ(rope_tables_count(10, dk, l31).other_flops, 3 * 10 * dk / 2 + flops);
}

// Each activation, plain and gated, against float64 (forward) and central differences of the float64 reference
// (backward), over inputs from −6 to 6 (GELU's tails and the tanh form's knee); counts by the documented figures.
TEST_F(Ops, ActivationsPlainAndGatedElementwise) {
  const int64_t n = 37;
  const Vec a = random_vec(n, 1, 4.0), bv = random_vec(n, 2, 2.0), r = random_vec(n, 3);
  struct Figures {
    Activation act;
    int64_t value, grad, both;  // FLOPs per element (ops/activation.h)
  };
  for (const Figures& fig : {Figures{Activation::silu, 4, 8, 9}, Figures{Activation::gelu, 5, 10, 11},
                             Figures{Activation::gelu_tanh, 9, 17, 18}}) {
    const Activation act = fig.act;
    SCOPED_TRACE(activation_name(act));
    counters().reset();
    counters().set_phase(Phase::forward);
    Tensor at = tensor_from(a, {n}, Category::activation, "a");
    Tensor bt = tensor_from(bv, {n}, Category::activation, "b");
    Tensor out = Tensor::empty({n}, Category::activation, "o");
    activation_forward(act, out, at);
    Vec ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = activation_ref(act, a[i]);
    EXPECT_LE(rel_err(vec_from(out), ref), kForwardTol);
    gated_activation_forward(act, out, at, bt);
    for (int64_t i = 0; i < n; ++i) ref[i] = activation_ref(act, a[i]) * bv[i];
    EXPECT_LE(rel_err(vec_from(out), ref), kForwardTol);

    counters().set_phase(Phase::backward);
    Tensor rt = tensor_from(r, {n}, Category::temporary, "r");
    Tensor ga = Tensor::empty({n}, Category::temporary, "ga"), gb = Tensor::empty({n}, Category::temporary, "gb");
    activation_backward(act, ga, rt, at);
    auto plain_loss = [&](const Vec& x) {
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += activation_ref(act, x[i]) * r[i];
      return l;
    };
    EXPECT_LE(rel_err(vec_from(ga), fd_grad(plain_loss, a)), kGradTol);
    gated_activation_backward(act, ga, gb, rt, at, bt);
    auto gate_loss = [&](const Vec& x, const Vec& y) {
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += activation_ref(act, x[i]) * y[i] * r[i];
      return l;
    };
    EXPECT_LE(rel_err(vec_from(ga), fd_grad([&](const Vec& x) { return gate_loss(x, bv); }, a)), kGradTol);
    EXPECT_LE(rel_err(vec_from(gb), fd_grad([&](const Vec& y) { return gate_loss(a, y); }, bv)), kGradTol);

    const char* plain = activation_op_name(act, false);
    const char* gated = activation_op_name(act, true);
    expect_count(counters().get(plain, Phase::forward), 0, fig.value * n, 4 * n, 4 * n);
    expect_count(counters().get(gated, Phase::forward), 0, (fig.value + 1) * n, 8 * n, 4 * n);
    expect_count(counters().get(plain, Phase::backward), 0, (fig.grad + 1) * n, 8 * n, 4 * n);
    expect_count(counters().get(gated, Phase::backward), 0, (fig.both + 3) * n, 12 * n, 8 * n);
  }
  EXPECT_STREQ(activation_op_name(Activation::silu, true), "swiglu");
  EXPECT_STREQ(activation_op_name(Activation::gelu_tanh, true), "geglu");
  EXPECT_STREQ(activation_op_name(Activation::gelu_tanh, false), "gelu");
}

// GELU's two forms at known points: x·Φ(x) from the normal CDF's published values (Φ(1) = 0.8413447460685429,
// Φ(−2) = 0.022750131948179195) and the tanh form's distance from the exact one (below 1e-3 on [−6, 6], the
// approximation's known bound ≈ 4.7e-4 near ±2).
TEST_F(Ops, GeluExactAndTanhAtKnownPoints) {
  const Vec x = {1.0, -2.0, 0.0, 6.0, -6.0};
  Tensor xt = tensor_from(x, {5}, Category::activation, "x");
  Tensor exact = Tensor::empty({5}, Category::activation, "e"), approx = Tensor::empty({5}, Category::activation, "t");
  activation_forward(Activation::gelu, exact, xt);
  activation_forward(Activation::gelu_tanh, approx, xt);
  EXPECT_NEAR(exact.data()[0], 0.8413447460685429, 1e-7);
  EXPECT_NEAR(exact.data()[1], -2.0 * 0.022750131948179195, 1e-7);
  EXPECT_EQ(exact.data()[2], 0.0f);
  EXPECT_NEAR(exact.data()[3], 6.0, 1e-6);
  EXPECT_NEAR(exact.data()[4], 0.0, 1e-7);
  double worst = 0;
  for (int i = -600; i <= 600; ++i) worst = std::max(worst, std::fabs(gelu_ref(i / 100.0) - gelu_tanh_ref(i / 100.0)));
  EXPECT_GT(worst, 1e-4);  // the two are different functions
  EXPECT_LT(worst, 1e-3);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(approx.data()[i], gelu_tanh_ref(x[i]), 1e-6) << x[i];
}

// ============================================================================================ ffn

struct FfnCase {
  int64_t n, d, f;
  FfnKind kind;
  bool biased = false;
};
void PrintTo(const FfnCase& c, std::ostream* os) {
  *os << ffn_kind_name(c.kind) << (c.biased ? "_biased" : "") << "_N" << c.n << "_D" << c.d << "_F" << c.f;
}
class FfnSweep : public Ops, public ::testing::WithParamInterface<FfnCase> {};

TEST_P(FfnSweep, ForwardBackwardSaved) {
  const auto [n, d, f, kind, biased] = GetParam();
  const bool gated = ffn_gated(kind);
  const Vec hx = random_vec(n * d, 1), w1 = random_vec(f * d, 2), w3 = random_vec(f * d, 3);
  const Vec w2 = random_vec(d * f, 4), r = random_vec(n * d, 5);
  const Vec b1 = biased ? random_vec(f, 6) : Vec{}, b3 = biased && gated ? random_vec(f, 7) : Vec{};
  const Vec b2 = biased ? random_vec(d, 8) : Vec{};
  Tensor ht = tensor_from(hx, {n, d}, Category::activation, "h");
  auto param = [](const Vec& v, Shape shape, const char* name) {
    return v.empty() ? Tensor() : tensor_from(v, shape, Category::parameter, name);
  };
  auto grad = [](const Vec& v, Shape shape, const char* name) {
    return v.empty() ? Tensor() : Tensor::zeros(shape, Category::gradient, name);
  };
  const FfnWeights w{param(w1, {f, d}, "w1"), gated ? param(w3, {f, d}, "w3") : Tensor(),
                     param(w2, {d, f}, "w2"), param(b1, {f}, "b1"),
                     param(b3, {f}, "b3"),    param(b2, {d}, "b2")};
  const FfnWeights g{grad(w1, {f, d}, "g1"), gated ? grad(w3, {f, d}, "g3") : Tensor(),
                     grad(w2, {d, f}, "g2"), grad(b1, {f}, "gb1"),
                     grad(b3, {f}, "gb3"),   grad(b2, {d}, "gb2")};

  FfnSaved saved;
  Tensor out = ffn_forward(saved, ht, w, kind, "t.ffn");
  EXPECT_LE(rel_err(vec_from(out), ffn_ref(hx, w1, w3, w2, n, d, f, kind, b1, b3, b2)), kForwardTol * 10);
  // Documented saved list: gated 3 (N, F) activations, plain 2; the output is a temporary.
  const int64_t nf = aligned_size(4 * n * f);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ffn.w1_out"), nf);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ffn.w3_out"), gated ? nf : 0);
  const char* act = gated                                      ? "t.ffn.gated"
                    : ffn_activation(kind) == Activation::silu ? "t.ffn.silu_out"
                                                               : "t.ffn.gelu_out";
  EXPECT_EQ(tracker().live_bytes_with_prefix(act), nf);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ffn."), (gated ? 3 : 2) * nf + aligned_size(4 * n * d));
  EXPECT_EQ(out.category(), Category::temporary);
  out.reset();

  Tensor gh = Tensor::empty({n, d}, Category::temporary, "gh");
  ffn_backward(gh, g, tensor_from(r, {n, d}, Category::temporary, "gout"), saved, w);
  EXPECT_EQ(tracker().live_bytes_with_prefix("t.ffn."), 0);  // everything saved and temporary is gone

  // The loss as a function of each operand in turn (the others fixed), against central differences.
  std::vector<Vec> at = {hx, w1, w3, w2, b1, b3, b2};
  auto loss_of = [&](size_t which) {
    return [&, which](const Vec& x) {
      std::vector<Vec> v = at;
      v[which] = x;
      return dot(ffn_ref(v[0], v[1], v[2], v[3], n, d, f, kind, v[4], v[5], v[6]), r);
    };
  };
  EXPECT_LE(rel_err(vec_from(gh), fd_grad(loss_of(0), hx)), kGradTol);
  EXPECT_LE(rel_err(vec_from(g.w1), fd_grad(loss_of(1), w1)), kGradTol);
  if (gated) {
    EXPECT_LE(rel_err(vec_from(g.w3), fd_grad(loss_of(2), w3)), kGradTol);
  }
  EXPECT_LE(rel_err(vec_from(g.w2), fd_grad(loss_of(3), w2)), kGradTol);
  if (biased) {
    EXPECT_LE(rel_err(vec_from(g.b1), fd_grad(loss_of(4), b1)), kGradTol);
    if (gated) {
      EXPECT_LE(rel_err(vec_from(g.b3), fd_grad(loss_of(5), b3)), kGradTol);
    }
    EXPECT_LE(rel_err(vec_from(g.b2), fd_grad(loss_of(6), b2)), kGradTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, FfnSweep,
                         ::testing::Values(FfnCase{3, 4, 6, FfnKind::swiglu}, FfnCase{5, 7, 11, FfnKind::swiglu, true},
                                           FfnCase{3, 4, 6, FfnKind::silu_mlp},
                                           FfnCase{5, 7, 11, FfnKind::silu_mlp, true}, FfnCase{3, 4, 6, FfnKind::geglu},
                                           FfnCase{5, 7, 11, FfnKind::geglu_tanh, true},
                                           FfnCase{3, 4, 6, FfnKind::gelu_mlp, true},
                                           FfnCase{5, 7, 11, FfnKind::gelu_tanh_mlp},
                                           FfnCase{4, 5, 9, FfnKind::gelu_tanh_mlp, true}));

// ============================================================================================ residual

TEST_F(Ops, ResidualAdd) {
  const Vec a = random_vec(2 * 3 * 5, 1), b = random_vec(2 * 3 * 5, 2);
  Tensor out = residual_forward(tensor_from(a, {2, 3, 5}, Category::activation, "a"),
                                tensor_from(b, {2, 3, 5}, Category::activation, "b"), "sum");
  for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(out.data()[i], static_cast<float>(a[i] + b[i]));
  expect_count(counters().get("residual", Phase::forward), 0, 30, 240, 120);
  expect_invalid(
      [] {
        residual_forward(Tensor::zeros({2, 3}, Category::activation, "a"),
                         Tensor::zeros({3, 2}, Category::activation, "b"), "s");
      },
      {"equal shapes"});
}

// ============================================================================================ cross-entropy

struct CeCase {
  int64_t n, v;
  float cap = 0.0f;  // final_logit_softcapping (0: none)
};
void PrintTo(const CeCase& c, std::ostream* os) { *os << "N" << c.n << "_V" << c.v << "_cap" << c.cap; }
class CrossEntropySweep : public Ops, public ::testing::WithParamInterface<CeCase> {};

TEST_P(CrossEntropySweep, LossGradientCountsInPlace) {
  const auto [n, v, cap] = GetParam();
  const int64_t capped = cap > 0 ? 1 : 0;
  const Vec z = random_vec(n * v, 1, 5.0);
  const auto tgt = random_ids(n, v, 2);
  Tensor logits = tensor_from(z, {n, v}, Category::activation, "lm_head.logits");
  Tensor targets = int_tensor(tgt, {1, n}, "targets");
  const int64_t act_before = tracker().stats()[Category::activation].allocated_bytes.current;

  CrossEntropySaved saved;
  const double loss = cross_entropy_forward(saved, logits, targets, "ce", cap);
  EXPECT_NEAR(loss, cross_entropy_ref(z, tgt, n, v, cap), 2e-6 * std::max(1.0, std::abs(loss)));
  EXPECT_EQ(saved.probs.data(), logits.data());  // in place: no second logits-sized buffer
  // Capped: the buffer holds tanh(z / c), and a float32 log-sum-exp per row is saved.
  EXPECT_EQ(tracker().live_bytes_with_prefix("ce.lse"), capped * aligned_size(4 * n));
  if (capped) {
    EXPECT_NEAR(logits.data()[0], std::tanh(z[0] / cap), 3e-7);
  }

  counters().set_phase(Phase::backward);
  Tensor grad = cross_entropy_backward(saved, 1.0f);
  EXPECT_EQ(grad.data(), logits.data());
  EXPECT_EQ(tracker().stats()[Category::activation].allocated_bytes.current, act_before);
  const Vec fd = fd_grad([&](const Vec& zz) { return cross_entropy_ref(zz, tgt, n, v, cap); }, z);
  EXPECT_LE(rel_err(vec_from(grad), fd), kGradTol);

  if (capped) {  // tanh, the max, exp and sum, the row loss and lse; backward recomputes p and takes 1 − u²
    expect_count(counters().get("cross_entropy", Phase::forward), 0, n * (7 * v + 6) + 1, 4 * (n * v + 2 * n),
                 4 * (n * v + 2 * n));
    expect_count(counters().get("cross_entropy", Phase::backward), 0, n * (7 * v + 8) + 1, 4 * (n * v + 2 * n),
                 4 * n * v);
  } else {
    expect_count(counters().get("cross_entropy", Phase::forward), 0, n * (5 * v + 4) + 1, 4 * (n * v + 2 * n),
                 4 * (n * v + n));
    expect_count(counters().get("cross_entropy", Phase::backward), 0, n * (v + 1) + 1, 4 * (n * v + n), 4 * n * v);
  }
  const OpCount f = cross_entropy_forward_count(n, v, DType::f32, capped),
                b = cross_entropy_backward_count(n, v, DType::f32, capped);
  expect_count(counters().get("cross_entropy", Phase::forward), 0, f.other_flops, f.bytes_read, f.bytes_written);
  expect_count(counters().get("cross_entropy", Phase::backward), 0, b.other_flops, b.bytes_read, b.bytes_written);
}

// Capped at 30 (Gemma-2's final_logit_softcapping) and at 2 and 3, where logits of scale 5 bend tanh well away from
// linear. (Far into saturation, |z / c| ≳ 8, float32's u = tanh rounds to ±1 and 1 − u² to 0: the gradient is lost
// there as in PyTorch's tanh backward, which reads the same saved output.)
INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropySweep,
                         ::testing::Values(CeCase{1, 2}, CeCase{4, 7}, CeCase{17, 33}, CeCase{8, 256},
                                           CeCase{4, 7, 30.0f}, CeCase{17, 33, 2.0f}, CeCase{1, 2, 3.0f}));

TEST_F(Ops, CrossEntropyStableForHugeLogits) {
  Tensor logits = Tensor::empty({1, 3}, Category::activation, "z");
  logits.data()[0] = 1000.0f;
  logits.data()[1] = -1000.0f;
  logits.data()[2] = 999.0f;
  CrossEntropySaved saved;
  const double loss = cross_entropy_forward(saved, logits, int_tensor({2}, {1, 1}, "t"), "ce");
  EXPECT_NEAR(loss, std::log(1.0 + std::exp(-1.0)) + 1.0, 1e-5);  // −log softmax at 999 vs 1000
  EXPECT_TRUE(std::isfinite(loss));
}

TEST_F(Ops, CrossEntropyRejectsBadTargets) {
  Tensor logits = Tensor::zeros({2, 4}, Category::activation, "z");
  CrossEntropySaved saved;
  expect_invalid(
      [&] {
        cross_entropy_forward(saved, logits, int_tensor({1, 4}, {1, 2}, "t"), "ce");
      },
      {"target at row 1 is 4", "[0, 3]"});
  expect_invalid(
      [&] {
        cross_entropy_forward(saved, logits, int_tensor({1, 2, 3}, {1, 3}, "t"), "ce");
      },
      {"2 elements"});
}

// ============================================================================================ cast

TEST_F(Ops, CastRoundsToNearestEvenAndCountsBytes) {
  // Lengths around the per-thread chunk (16 K) and the 16-lane vector: every element equals the scalar rule.
  for (int64_t n : {1, 15, 17, 16 * 1024, 16 * 1024 + 3, 100003}) {
    Tensor x = Tensor::empty({n}, Category::activation, "x");
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::normal_distribution<float> normal(0.0f, 10.0f);
    for (int64_t i = 0; i < n; ++i) x.data()[i] = normal(rng);
    counters().reset();
    const Tensor x16 = cast(x, DType::bf16, Category::temporary, "x.bf16");
    expect_count(counters().get("cast", Phase::forward), 0, 0, 4 * n, 2 * n);
    EXPECT_EQ(x16.dtype(), DType::bf16);
    EXPECT_EQ(x16.category(), Category::temporary);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += x16.data_bf16()[i].bits != to_bf16(x.data()[i]).bits;
    EXPECT_EQ(wrong, 0) << "n " << n;
    // And back, in the backward phase: exact widening, counted there.
    counters().set_phase(Phase::backward);
    Tensor back = Tensor::empty({n}, Category::temporary, "x.back");
    cast_into(back, x16);
    expect_count(counters().get("cast", Phase::backward), 0, 0, 2 * n, 4 * n);
    EXPECT_EQ(counters().get("cast", Phase::backward).calls, 1);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back.data()[i], to_float(x16.data_bf16()[i]));
    counters().set_phase(Phase::forward);
  }
}

TEST_F(Ops, CastRejectsMismatchesNamingTheTensors) {
  Tensor x = Tensor::zeros({4, 6}, Category::activation, "x");
  Tensor wrong_shape = Tensor::zeros({6, 4}, Category::activation, "y", DType::bf16);
  Tensor ids = Tensor::zeros({4, 6}, Category::activation, "ids", DType::i32);
  expect_invalid([&] { cast_into(wrong_shape, x); }, {"cast: src 'x' (4, 6) and dst 'y' (6, 4)"});
  expect_invalid([&] { cast_into(ids, x); }, {"'ids' is int32", "allowed: float32, bfloat16"});
  expect_invalid([&] { cast(x.transpose(0, 1), DType::bf16, Category::temporary, "t"); }, {"must be contiguous"});
}

// ============================================================================================ contracts

// What an op allocates is declared beside its kernel (runtime/contract.h); here each op runs and the allocator's
// events are held against the declarations: every declared tensor allocated once, in order, named name + suffix,
// with its category and (64-byte rounded) bytes; the temporaries freed before the call returns, the rest still
// live. oneDNN's scratchpads are the matmul's own (checked per geometry by reconcile) and are left aside.
void expect_allocations(const std::function<void()>& call, const std::string& name,
                        const std::vector<TensorDecl>& decls) {
  tracker().clear_timeline();
  call();
  std::vector<AllocationEvent> allocs;
  std::vector<std::string> freed;
  for (const AllocationEvent& e : tracker().events()) {
    if (e.name.rfind("onednn.scratchpad.", 0) == 0) continue;
    if (e.alloc)
      allocs.push_back(e);
    else
      freed.push_back(e.name);
  }
  ASSERT_EQ(allocs.size(), decls.size()) << name;
  for (size_t i = 0; i < decls.size(); ++i) {
    const TensorDecl& t = decls[i];
    const std::string full = name + std::string(t.suffix);
    EXPECT_EQ(allocs[i],
              (AllocationEvent{full, t.category, aligned_size(t.elements().value() * dtype_bytes(t.dtype)), true}));
    const bool was_freed = std::find(freed.begin(), freed.end(), full) != freed.end();
    EXPECT_EQ(was_freed, t.lifetime == Lifetime::temporary) << full;
  }
}

// The counters of one call (op, phase) against the op's declared count, field by field.
void expect_declared_count(std::string_view op, Phase phase, const OpCount& declared) {
  expect_count(counters().get(op, phase), declared.matmul_flops, declared.other_flops, declared.bytes_read,
               declared.bytes_written);
}

TEST_F(Ops, EveryOpAllocatesAndCountsWhatItDeclares) {
  const int64_t b = 2, t = 5, d = 6, h = 3, f = 8, v = 11, n = b * t;
  for (DType act : {DType::f32, DType::bf16}) {
    if (act == DType::bf16 && !bf16_matmul_unavailable_reason().empty()) continue;
    SCOPED_TRACE(dtype_name(act));
    auto input = [&](const Shape& shape, const char* name, DType dtype, uint32_t seed) {
      Tensor x = tensor_from(
          random_vec(shape[0] * (shape.size() > 1 ? shape[1] : 1) * (shape.size() > 2 ? shape[2] : 1), seed), shape,
          Category::activation, name);
      return dtype == DType::f32 ? x : cast(x, dtype, Category::activation, std::string(name) + ".b");
    };
    const Tensor x = input({b, t, d}, "x", DType::f32, 1), gain = input({d}, "g", DType::f32, 2);
    counters().reset();
    RmsnormSaved norm;
    Tensor y;
    const RmsnormTensors rt = rmsnorm_forward_tensors(x.shape(), act);
    expect_allocations([&] { y = rmsnorm_forward(norm, x, gain, 1e-5f, "n", act); }, "n", {rt.out, rt.rstd});
    expect_declared_count("rmsnorm", Phase::forward, rmsnorm_forward_count(n, d, DType::f32, act));
    for (const bool bias : {false, true}) {
      LayernormSaved ln;
      const Tensor beta = bias ? gain : Tensor();
      const LayernormTensors lt = layernorm_forward_tensors(x.shape(), act);
      counters().reset();
      Tensor ln_out;
      expect_allocations([&] { ln_out = layernorm_forward(ln, x, gain, beta, 1e-5f, "ln", act); }, "ln",
                         {lt.out, lt.mean, lt.rstd});
      expect_declared_count("layernorm", Phase::forward, layernorm_forward_count(n, d, bias, DType::f32, act));
    }

    const Tensor w = input({f, d}, "w", act, 3);
    LinearSaved lin;
    Tensor z;
    expect_allocations([&] { z = linear_forward(lin, y, w, "lin.out", act, Category::activation); }, "lin.out",
                       {linear_forward_tensors(y.shape(), f, act, Category::activation).out});

    const Tensor q = input({b, t, d}, "q", act, 4), k = input({b, t, d}, "k", act, 5),
                 vv = input({b, t, d}, "v", act, 6);
    counters().reset();
    AttentionSaved attn;
    Tensor ctx;
    const AttentionShape sh{b, t, h, h, d / h};
    const AttentionTensors at = attention_forward_tensors(sh, act);
    expect_allocations([&] { ctx = attention_forward(attn, q, k, vv, h, h, "a"); }, "a", {at.probs, at.ctx});
    expect_declared_count("attention", Phase::forward, attention_forward_count(sh, act));
    Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq", act),
           gk = Tensor::empty({b, t, d}, Category::temporary, "gk", act),
           gv = Tensor::empty({b, t, d}, Category::temporary, "gv", act);
    counters().set_phase(Phase::backward);
    expect_allocations([&] { attention_backward(gq, gk, gv, ctx, attn); }, "a", {attention_backward_tensor(sh, act)});
    expect_declared_count("attention", Phase::backward, attention_backward_count(sh, act));
    counters().set_phase(Phase::forward);

    counters().reset();
    const int threads = omp_get_max_threads();
    FlashAttentionSaved flash;
    Tensor fctx;
    const FlashAttentionTensors ft = flash_attention_forward_tensors(sh, act, threads);
    expect_allocations([&] { fctx = flash_attention_forward(flash, q, k, vv, h, h, "fa"); }, "fa",
                       {ft.lse, ft.ctx, ft.workspace});
    expect_declared_count("attention", Phase::forward, flash_attention_forward_count(sh, act));
    counters().set_phase(Phase::backward);
    expect_allocations([&] { flash_attention_backward(gq, gk, gv, fctx, flash); }, "fa",
                       {flash_attention_backward_tensors(sh, act, threads).workspace});
    expect_declared_count("attention", Phase::backward, flash_attention_backward_count(sh, act));
    counters().set_phase(Phase::forward);

    for (FfnKind kind : {FfnKind::swiglu, FfnKind::silu_mlp, FfnKind::geglu_tanh, FfnKind::gelu_mlp}) {
      const Tensor w1 = input({f, d}, "w1", act, 7), w3 = input({f, d}, "w3", act, 8), w2 = input({d, f}, "w2", act, 9);
      const Tensor hh = input({b, t, d}, "h", act, 10);
      FfnSaved ffn;
      Tensor out;
      const FfnForwardTensors fw = ffn_forward_tensors(hh.shape(), f, act, kind);
      std::vector<TensorDecl> forward = {fw.w1_out};
      if (fw.w3_out) forward.push_back(*fw.w3_out);
      forward.push_back(fw.act);
      forward.push_back(fw.out);
      expect_allocations(
          [&] {
            out = ffn_forward(ffn, hh, {w1, w3, w2, Tensor(), Tensor(), Tensor()}, kind, "ffn");
          },
          "ffn", forward);
      Tensor gw1 = Tensor::zeros({f, d}, Category::gradient, "gw1"),
             gw3 = Tensor::zeros({f, d}, Category::gradient, "gw3"),
             gw2 = Tensor::zeros({d, f}, Category::gradient, "gw2");
      Tensor gh = Tensor::empty({b, t, d}, Category::temporary, "gh");
      const Tensor gout = input({b, t, d}, "gout", act, 11);
      const FfnBackwardTensors bw = ffn_backward_tensors(gh.shape(), f, act, kind);
      std::vector<TensorDecl> backward = {bw.grad_act, bw.grad_w1_out};
      if (bw.grad_w3_out) backward.push_back(*bw.grad_w3_out);
      expect_allocations(
          [&] {
            ffn_backward(gh, {gw1, gw3, gw2, Tensor(), Tensor(), Tensor()}, gout, ffn,
                         {w1, w3, w2, Tensor(), Tensor(), Tensor()});
          },
          "ffn", backward);
    }

    counters().reset();
    Tensor sum;
    expect_allocations([&] { sum = residual_forward(x, x, "res"); }, "res", {residual_forward_tensor(x.shape())});
    expect_declared_count("residual", Phase::forward, residual_forward_count(n * d));
    Tensor c;
    expect_allocations([&] { c = cast(x, act, Category::temporary, "c"); }, "c",
                       {cast_tensor(x.shape(), act, Category::temporary)});
    expect_declared_count("cast", Phase::forward, cast_count(n * d, DType::f32, act));
  }
  counters().reset();
  Tensor table = tensor_from(random_vec(v * 6, 12), {v, 6}, Category::parameter, "emb");
  Tensor tokens = Tensor::zeros({b, t}, Category::activation, "tok", DType::i32);
  Tensor rows;
  expect_allocations([&] { rows = embedding_forward(tokens, table, "rows"); }, "rows",
                     {embedding_forward_tensor(b, t, 6)});
  expect_declared_count("embedding", Phase::forward, embedding_forward_count(n, 6));
  Tensor logits = tensor_from(random_vec(n * v, 13), {n, v}, Category::activation, "logits");
  CrossEntropySaved ce;
  expect_allocations([&] { cross_entropy_forward(ce, logits, tokens, "ce"); }, "ce", {cross_entropy_forward_tensor(n)});
  expect_declared_count("cross_entropy", Phase::forward, cross_entropy_forward_count(n, v));
}

}  // namespace
}  // namespace reckon
