#include "estimators/memory.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "runtime/matmul.h"

namespace reckon {

namespace {

// Integer replay of allocations and frees: current bytes per category, the peak (first moment reached),
// and the live set at that moment.
class Replay {
 public:
  Replay(bool scratchpad, std::vector<StepMatmul>* matmuls) : scratchpad_(scratchpad), matmuls_(matmuls) {}

  void alloc(const std::string& name, Category cat, int64_t elements) {
    const int64_t bytes = aligned_size(4 * elements);
    live_[name] = {cat, bytes};
    current_[static_cast<int>(cat)] += bytes;
    total_ += bytes;
    auto& cp = estimate_.category_peak[static_cast<int>(cat)];
    cp = std::max(cp, current_[static_cast<int>(cat)]);
    if (total_ > estimate_.peak_total) {
      estimate_.peak_total = total_;
      estimate_.peak_breakdown = current_;
      estimate_.peak_moment = fmt::format("{}: {} allocated", phase_, name);
      estimate_.scratchpad_at_peak = scratch_live_;
      peak_live_ = live_;
    }
  }

  void free(const std::string& name) {
    auto it = live_.find(name);
    if (it == live_.end()) throw std::logic_error("memory estimate: free of unknown tensor " + name);
    current_[static_cast<int>(it->second.first)] -= it->second.second;
    total_ -= it->second.second;
    live_.erase(it);
  }

  // One matmul call: oneDNN's scratchpad (if any) lives for exactly the call.
  void matmul(const MatmulGeometry& g, const std::string& op) {
    if (matmuls_ != nullptr) record(g, op);
    if (!scratchpad_) return;
    const int64_t bytes = matmul_scratchpad_bytes(g);
    if (bytes == 0) return;
    const std::string name = "onednn.scratchpad." + op;
    const int64_t elements = (bytes + 3) / 4;
    scratch_live_ = aligned_size(4 * elements);
    estimate_.scratchpad_max = std::max(estimate_.scratchpad_max, scratch_live_);
    alloc(name, Category::temporary, elements);
    free(name);
    scratch_live_ = 0;
  }

  void set_phase(Phase phase) { phase_ = phase_name(phase), phase_enum_ = phase; }
  int64_t total() const { return total_; }

  MemoryEstimate finish() {
    for (const auto& [name, cb] : peak_live_) estimate_.live_at_peak.push_back({name, cb.first, cb.second});
    std::stable_sort(estimate_.live_at_peak.begin(), estimate_.live_at_peak.end(),
                     [](const EstimatedTensor& a, const EstimatedTensor& b) {
                       return a.bytes != b.bytes ? a.bytes > b.bytes : a.name < b.name;
                     });
    estimate_.step_end_total = total_;
    return estimate_;
  }

 private:
  // Same geometry under the same op × phase: one entry, calls counted.
  void record(const MatmulGeometry& g, const std::string& op) {
    for (StepMatmul& m : *matmuls_) {
      if (m.key.op == op && m.key.phase == phase_enum_ && same_geometry(m.geometry, g)) {
        ++m.calls;
        return;
      }
    }
    matmuls_->push_back({{op, phase_enum_}, g, 1});
  }

  bool scratchpad_;
  std::vector<StepMatmul>* matmuls_;
  Phase phase_enum_ = Phase::forward;
  std::map<std::string, std::pair<Category, int64_t>> live_, peak_live_;
  std::array<int64_t, kNumCategories> current_{};
  int64_t total_ = 0;
  int64_t scratch_live_ = 0;
  const char* phase_ = "setup";
  MemoryEstimate estimate_;
};

// The geometries of the matmuls the ops run (same dims and strides as the ops' tensor views).
MatmulGeometry geometry(int rank, std::array<int64_t, 4> a_dims, std::array<int64_t, 4> a_strides,
                        std::array<int64_t, 4> b_dims, std::array<int64_t, 4> b_strides,
                        std::array<int64_t, 4> dst_dims, std::array<int64_t, 4> dst_strides, float alpha, bool acc) {
  MatmulGeometry g;
  g.rank = rank;
  g.alpha = alpha;
  g.accumulate = acc;
  for (int d = 0; d < rank; ++d) {
    g.a_dims[d] = a_dims[d], g.a_strides[d] = a_strides[d];
    g.b_dims[d] = b_dims[d], g.b_strides[d] = b_strides[d];
    g.dst_dims[d] = dst_dims[d], g.dst_strides[d] = dst_strides[d];
  }
  return g;
}

// linear: y (N, OUT) = x (N, IN) · Wᵀ;  dX (N, IN) = dY · W;  dW (OUT, IN) += dYᵀ · X
MatmulGeometry linear_fwd(int64_t n, int64_t in, int64_t out) {
  return geometry(2, {n, in}, {in, 1}, {in, out}, {1, in}, {n, out}, {out, 1}, 1.0f, false);
}
MatmulGeometry linear_dx(int64_t n, int64_t in, int64_t out, bool acc) {
  return geometry(2, {n, out}, {out, 1}, {out, in}, {in, 1}, {n, in}, {in, 1}, 1.0f, acc);
}
MatmulGeometry linear_dw(int64_t n, int64_t in, int64_t out) {
  return geometry(2, {out, n}, {1, out}, {n, in}, {in, 1}, {out, in}, {in, 1}, 1.0f, true);
}

struct AttnGeometry {
  int64_t b, h, t, d, dk;
  float scale;
  std::array<int64_t, 4> heads() const { return {b, h, t, dk}; }
  std::array<int64_t, 4> head_strides() const { return {t * d, dk, d, 1}; }
  std::array<int64_t, 4> heads_t() const { return {b, h, dk, t}; }
  std::array<int64_t, 4> head_t_strides() const { return {t * d, dk, 1, d}; }
  std::array<int64_t, 4> tt() const { return {b, h, t, t}; }
  std::array<int64_t, 4> tt_strides() const { return {h * t * t, t * t, t, 1}; }
  std::array<int64_t, 4> tt_t_strides() const { return {h * t * t, t * t, 1, t}; }
};

// The whole step, replayed: memory estimate out, and (if `matmuls`) every matmul call recorded.
MemoryEstimate replay_step(const ModelConfig& c, const MemoryEstimateOptions& o, std::vector<StepMatmul>* matmuls) {
  const int64_t b = c.batch_size, t = c.context_length, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const int64_t n = b * t, h = c.num_heads;
  const bool swiglu = c.ffn == FfnKind::swiglu;
  Replay r(o.onednn_scratchpad, matmuls);

  // Parameters, gradients (and, in steady state, AdamW's m and v): one block per named tensor.
  struct Shape2 { std::string name; int64_t elements; };
  std::vector<Shape2> params;
  params.push_back({"tok_emb.weight", v * d});
  if (c.position == Position::learned) params.push_back({"pos_emb.weight", t * d});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    params.push_back({p + "attn_norm.weight", d});
    for (const char* w : {"wq", "wk", "wv", "wo"}) params.push_back({p + "attn." + w + ".weight", d * d});
    params.push_back({p + "ffn_norm.weight", d});
    params.push_back({p + "ffn.w1.weight", f * d});
    if (swiglu) params.push_back({p + "ffn.w3.weight", f * d});
    params.push_back({p + "ffn.w2.weight", d * f});
  }
  params.push_back({"final_norm.weight", d});
  if (!c.tie_embeddings) params.push_back({"lm_head.weight", v * d});
  MemoryEstimate est;
  for (const Shape2& p : params) {
    r.alloc(p.name, Category::parameter, p.elements);
    r.alloc(p.name + ".grad", Category::gradient, p.elements);
    est.num_parameters += p.elements;
  }
  if (o.optimizer_state) {
    for (const Shape2& p : params) {
      r.alloc(p.name + ".exp_avg", Category::optimizer_state, p.elements);
      r.alloc(p.name + ".exp_avg_sq", Category::optimizer_state, p.elements);
    }
  }
  if (o.batch_tensors) {
    r.alloc("batch.tokens", Category::activation, n);
    r.alloc("batch.targets", Category::activation, n);
  }

  const AttnGeometry ag{b, h, t, d, d / h, 1.0f / std::sqrt(static_cast<float>(d / h))};
  auto lin_fwd = [&](const std::string& out, Category cat, int64_t in, int64_t outf, const char* op) {
    r.alloc(out, cat, n * outf);
    r.matmul(linear_fwd(n, in, outf), op);
  };
  auto lin_bwd = [&](int64_t in, int64_t outf, bool acc, const char* op) {
    r.matmul(linear_dx(n, in, outf, acc), op);
    r.matmul(linear_dw(n, in, outf), op);
  };

  // ---------------------------------------------------------------- forward
  r.set_phase(Phase::forward);
  r.alloc("tok_emb.out", Category::activation, n * d);
  std::string x = "tok_emb.out";  // the residual stream tensor entering the next layer
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    r.alloc(p + "attn_norm.out", Category::activation, n * d);
    r.alloc(p + "attn_norm.rstd", Category::activation, n);
    for (const char* w : {"q", "k", "v"}) lin_fwd(p + "attn." + w, Category::activation, d, d, "linear");
    r.alloc(p + "attn.probs", Category::activation, b * h * t * t);
    r.alloc(p + "attn.ctx", Category::activation, n * d);
    r.matmul(geometry(4, ag.heads(), ag.head_strides(), ag.heads_t(), ag.head_t_strides(), ag.tt(), ag.tt_strides(),
                      ag.scale, false), "attention");
    r.matmul(geometry(4, ag.tt(), ag.tt_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(), 1.0f,
                      false), "attention");
    lin_fwd(p + "attn.out", Category::temporary, d, d, "linear");
    r.alloc(p + "attn_residual", Category::activation, n * d);
    r.free(p + "attn.out");
    r.alloc(p + "ffn_norm.out", Category::activation, n * d);
    r.alloc(p + "ffn_norm.rstd", Category::activation, n);
    lin_fwd(p + "ffn.w1_out", Category::activation, d, f, "linear");
    if (swiglu) lin_fwd(p + "ffn.w3_out", Category::activation, d, f, "linear");
    r.alloc(p + (swiglu ? "ffn.gated" : "ffn.silu_out"), Category::activation, n * f);
    lin_fwd(p + "ffn.out", Category::temporary, f, d, "linear");
    r.alloc(p + "ffn_residual", Category::activation, n * d);
    r.free(p + "ffn.out");
    x = p + "ffn_residual";
  }
  r.alloc("final_norm.out", Category::activation, n * d);
  r.alloc("final_norm.rstd", Category::activation, n);
  lin_fwd("lm_head.logits", Category::activation, d, v, "lm_head");
  r.alloc("cross_entropy.row_loss", Category::temporary, n);
  r.free("cross_entropy.row_loss");

  // ---------------------------------------------------------------- backward
  r.set_phase(Phase::backward);
  r.alloc("final_norm.grad_out", Category::temporary, n * d);
  lin_bwd(d, v, false, "lm_head");
  r.free("final_norm.out");   // lm_head's saved input
  r.free("lm_head.logits");   // the buffer that held probs, then dlogits
  r.alloc("residual.grad", Category::temporary, n * d);
  r.free(x);                  // final norm's saved input
  r.free("final_norm.rstd");
  r.free("final_norm.grad_out");
  for (int64_t i = c.num_layers - 1; i >= 0; --i) {
    const std::string p = fmt::format("layers.{}.", i);
    const std::string layer_input = i == 0 ? "tok_emb.out" : fmt::format("layers.{}.ffn_residual", i - 1);
    r.alloc(p + "ffn_norm.grad_out", Category::temporary, n * d);
    r.alloc(p + "ffn.grad_act", Category::temporary, n * f);
    lin_bwd(f, d, false, "linear");
    r.free(p + (swiglu ? "ffn.gated" : "ffn.silu_out"));
    r.alloc(p + "ffn.grad_w1_out", Category::temporary, n * f);
    if (swiglu) {
      r.alloc(p + "ffn.grad_w3_out", Category::temporary, n * f);
      r.free(p + "ffn.grad_act");
      r.free(p + "ffn.w1_out");
      r.free(p + "ffn.w3_out");
      lin_bwd(d, f, false, "linear");
      r.free(p + "ffn.grad_w3_out");
      lin_bwd(d, f, true, "linear");
    } else {
      r.free(p + "ffn.grad_act");
      r.free(p + "ffn.w1_out");
      lin_bwd(d, f, false, "linear");
    }
    r.free(p + "ffn_norm.out");  // the last linear to use it has run
    r.free(p + "ffn.grad_w1_out");
    r.free(p + "attn_residual");  // ffn norm's saved input
    r.free(p + "ffn_norm.rstd");
    r.free(p + "ffn_norm.grad_out");
    r.alloc(p + "attn.grad_ctx", Category::temporary, n * d);
    lin_bwd(d, d, false, "linear");
    r.free(p + "attn.ctx");
    for (const char* g : {"attn.grad_q", "attn.grad_k", "attn.grad_v"}) r.alloc(p + g, Category::temporary, n * d);
    r.alloc(p + "attn.grad_probs", Category::temporary, b * h * t * t);
    r.matmul(geometry(4, ag.heads(), ag.head_strides(), ag.heads_t(), ag.head_t_strides(), ag.tt(), ag.tt_strides(),
                      1.0f, false), "attention");  // dP = dC Vᵀ
    r.matmul(geometry(4, ag.tt(), ag.tt_t_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(), 1.0f,
                      false), "attention");  // dV = Pᵀ dC
    r.free(p + "attn.probs");
    r.free(p + "attn.v");
    r.matmul(geometry(4, ag.tt(), ag.tt_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(),
                      ag.scale, false), "attention");  // dQ = dS K
    r.free(p + "attn.k");
    r.matmul(geometry(4, ag.tt(), ag.tt_t_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(),
                      ag.scale, false), "attention");  // dK = dSᵀ Q
    r.free(p + "attn.q");
    r.free(p + "attn.grad_probs");
    r.free(p + "attn.grad_ctx");
    r.alloc(p + "attn_norm.grad_out", Category::temporary, n * d);
    lin_bwd(d, d, false, "linear");
    r.free(p + "attn.grad_q");
    lin_bwd(d, d, true, "linear");
    r.free(p + "attn.grad_k");
    lin_bwd(d, d, true, "linear");
    r.free(p + "attn_norm.out");  // q, k, v linears' saved input
    r.free(p + "attn.grad_v");
    r.free(layer_input);
    r.free(p + "attn_norm.rstd");
    r.free(p + "attn_norm.grad_out");
  }
  r.free("residual.grad");
  r.set_phase(Phase::optimizer);
  return r.finish();
}

}  // namespace

MemoryEstimate estimate_step_memory(const ModelConfig& config, const MemoryEstimateOptions& options) {
  return replay_step(config, options, nullptr);
}

std::vector<StepMatmul> step_matmuls(const ModelConfig& config) {
  std::vector<StepMatmul> matmuls;
  replay_step(config, {.optimizer_state = true, .onednn_scratchpad = false, .batch_tensors = true}, &matmuls);
  return matmuls;
}

LinearMemory memory_linear_in_batch(const ModelConfig& config, const MemoryEstimateOptions& options) {
  auto peak_at = [&](int64_t batch) {
    ModelConfig c = config;
    c.batch_size = batch;
    return estimate_step_memory(c, options).peak_total;
  };
  const int64_t p1 = peak_at(1), p2 = peak_at(2);
  LinearMemory lin{p2 - p1, p1 - (p2 - p1), true};
  for (int64_t batch : {3, 4, 8}) {
    if (peak_at(batch) != lin.per_sample * batch + lin.fixed) lin.exact = false;
  }
  return lin;
}

}  // namespace reckon
