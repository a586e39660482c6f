#include "estimators/memory.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <stdexcept>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "model/layout.h"
#include "ops/flash_attention.h"
#include "optim/zero.h"
#include "runtime/checked.h"
#include "runtime/machine.h"
#include "runtime/matmul.h"

namespace reckon {

namespace {

// A tensor's name without building a string per event: "layers.{layer}.{suffix}" for layer ≥ 0, "{suffix}"
// for kTop, "onednn.scratchpad.{suffix}" for kScratch. Only the tensors live at the peak are ever formatted,
// so a replay costs a few hash-map operations per event: linear in num_layers with a small constant.
constexpr int32_t kTop = -1, kScratch = -2;
struct TensorName {
  int32_t layer;
  std::string_view suffix;    // string literals: they live as long as the program
  std::string_view ext = {};  // appended: ".grad", ".exp_avg", ".exp_avg_sq" of a parameter
  int32_t index = -1;         // appended as ".<index>" when ≥ 0: "comm.bucket.3"
  bool operator==(const TensorName& o) const = default;
  std::string str() const {
    const std::string tail = index >= 0 ? fmt::format(".{}", index) : std::string();
    if (layer == kTop) return fmt::format("{}{}{}", suffix, ext, tail);
    if (layer == kScratch) return fmt::format("onednn.scratchpad.{}", suffix);
    return fmt::format("layers.{}.{}{}{}", layer, suffix, ext, tail);
  }
};
struct TensorNameHash {
  size_t operator()(const TensorName& n) const {
    const std::hash<std::string_view> h;
    return h(n.suffix) ^ (h(n.ext) * 31) ^ (static_cast<size_t>(n.layer + 3) * 0x9E3779B97F4A7C15ULL) ^
           (static_cast<size_t>(n.index + 1) * 0xC2B2AE3D27D4EB4FULL);
  }
};
TensorName top(std::string_view suffix) { return {kTop, suffix}; }

// Integer replay of allocations and frees: current bytes per category, the peak (first moment reached), and
// the live set at that moment. Every size is CheckedInt arithmetic: a config whose bytes do not fit int64
// throws SizeOverflow instead of wrapping.
class Replay {
 public:
  Replay(bool scratchpad, bool keep_log, bool step_events, std::vector<StepMatmul>* matmuls)
      : scratchpad_(scratchpad), keep_log_(keep_log || step_events), step_events_(step_events), matmuls_(matmuls) {}

  // What was allocated so far (parameters, gradients, state, the batch) is live before the step begins: the
  // step's events, compared with the runtime's timeline of one step, start here.
  void mark_step_start() { step_start_ = static_cast<int64_t>(log_.size()); }

  // `persistent`: a block that lives through the step (parameters, gradients, optimizer state, the batch) and is
  // never freed, so it needs no entry in the live set (only in the log, for the live set at the peak).
  void alloc(TensorName name, Category cat, CheckedInt elements, DType dtype = DType::f32, bool persistent = false) {
    const int64_t raw = (dtype_bytes(dtype) * elements).value();
    if (raw > kMaxAllocationBytes) {  // a count that fits int64 but a tensor the allocator would refuse
      throw SizeOverflow(fmt::format("{} would be one tensor of {} bytes, above the largest allocation ({} bytes)",
                                     name.str(), raw, kMaxAllocationBytes));
    }
    const int64_t bytes = aligned_size(raw);
    const int c = static_cast<int>(cat);
    if (!persistent) {
      std::vector<Named>& slot = live_slot(name);
      for (const Named& e : slot) {
        if (e.name == name) throw std::logic_error("memory estimate: tensor allocated twice: " + name.str());
      }
      slot.push_back({name, Live{cat, bytes}});
    }
    if (keep_log_) log_.push_back({name, cat, bytes, true});
    current_[c] += bytes;
    total_ += bytes;
    category_peak_[c] = std::max(category_peak_[c], current_[c]);
    if (total_ > peak_total_) {  // the first moment the total reaches a new high
      peak_total_ = total_;
      peak_breakdown_ = current_;
      peak_event_ = static_cast<int64_t>(log_.size());  // 0 without a log: no live set is rebuilt
      peak_name_ = name;
      peak_phase_label_ = phase_label_;
      scratchpad_at_peak_ = scratch_live_;
    }
  }

  void free(TensorName name) {
    std::vector<Named>& slot = live_slot(name);
    auto it = std::find_if(slot.rbegin(), slot.rend(), [&](const Named& e) { return e.name == name; });
    if (it == slot.rend()) throw std::logic_error("memory estimate: free of unknown tensor " + name.str());
    const Live live = it->live;
    *it = slot.back();
    slot.pop_back();
    const int c = static_cast<int>(live.category);
    if (keep_log_) log_.push_back({name, live.category, live.bytes, false});
    current_[c] -= live.bytes;
    total_ -= live.bytes;
  }

  // One matmul call: oneDNN's scratchpad (if any) lives for exactly the call.
  void matmul(const MatmulGeometry& g, const char* op) {
    if (matmuls_ != nullptr) record(g, op);
    if (!scratchpad_) return;
    const int64_t bytes = matmul_scratchpad_bytes(g);
    if (bytes == 0) return;
    const CheckedInt elements = (CheckedInt(bytes) + 3) / 4;
    scratch_live_ = aligned_size((4 * elements).value());
    scratchpad_max_ = std::max(scratchpad_max_, scratch_live_);
    alloc({kScratch, op}, Category::temporary, elements);
    free({kScratch, op});
    scratch_live_ = 0;
  }

  void set_phase(Phase phase) { phase_ = phase, phase_label_ = phase_name(phase); }

  // The estimate; the live set at the peak is rebuilt from the event log (one pass), not copied at every new
  // high (which made the replay quadratic in num_layers).
  MemoryEstimate finish() {
    MemoryEstimate e;
    for (int c = 0; c < kNumCategories; ++c) {
      e.peak_breakdown[c] = peak_breakdown_[c].value();
      e.category_peak[c] = category_peak_[c].value();
    }
    e.peak_total = peak_total_.value();
    e.scratchpad_at_peak = scratchpad_at_peak_;
    e.scratchpad_max = scratchpad_max_;
    e.step_end_total = total_.value();
    if (peak_total_ > 0) e.peak_moment = fmt::format("{}: {} allocated", peak_phase_label_, peak_name_.str());
    std::unordered_map<TensorName, Live, TensorNameHash> at_peak;
    for (int64_t i = 0; i < peak_event_; ++i) {
      const Event& ev = log_[i];
      if (ev.alloc) at_peak.emplace(ev.name, Live{ev.category, ev.bytes});
      else at_peak.erase(ev.name);
    }
    for (const auto& [name, live] : at_peak) e.live_at_peak.push_back({name.str(), live.category, live.bytes});
    if (step_events_) {
      for (size_t i = static_cast<size_t>(step_start_); i < log_.size(); ++i) {
        e.step_events.push_back({log_[i].name.str(), log_[i].category, log_[i].bytes, log_[i].alloc});
      }
    }
    std::sort(e.live_at_peak.begin(), e.live_at_peak.end(), [](const EstimatedTensor& a, const EstimatedTensor& b) {
      return a.bytes != b.bytes ? a.bytes > b.bytes : a.name < b.name;
    });
    return e;
  }

 private:
  struct Live {
    Category category;
    int64_t bytes;
  };
  struct Event {
    TensorName name;
    Category category;
    int64_t bytes;
    bool alloc;
  };

  // Same geometry under the same op × phase: one entry, calls counted.
  void record(const MatmulGeometry& g, const char* op) {
    for (StepMatmul& m : *matmuls_) {
      if (m.key.phase == phase_ && m.key.op == op && same_geometry(m.geometry, g)) {
        ++m.calls;
        return;
      }
    }
    matmuls_->push_back({{op, phase_}, g, 1});
  }

  bool scratchpad_;
  bool keep_log_;  // the event log rebuilds the live set at the peak (live_at_peak); totals need none
  bool step_events_;
  int64_t step_start_ = 0;
  std::vector<StepMatmul>* matmuls_;
  Phase phase_ = Phase::forward;
  // The live (freeable) tensors, one short list per layer (+ top-level and scratchpad lists): a free scans a
  // few entries of its own layer instead of hashing into one map of every tensor of the step.
  struct Named {
    TensorName name;
    Live live;
  };
  std::vector<Named>& live_slot(const TensorName& name) {
    const size_t index = static_cast<size_t>(name.layer + 2);  // kScratch = -2, kTop = -1, layers 0…
    if (index >= live_.size()) live_.resize(index + 1);
    return live_[index];
  }
  std::vector<std::vector<Named>> live_;
  std::vector<Event> log_;
  std::array<CheckedInt, kNumCategories> current_{}, category_peak_{}, peak_breakdown_{};
  CheckedInt total_ = 0, peak_total_ = 0;
  int64_t peak_event_ = 0;  // events [0, peak_event_) built the live set at the peak
  TensorName peak_name_{kTop, ""};
  const char* phase_label_ = "setup";  // before the first set_phase: parameters, gradients, state
  const char* peak_phase_label_ = "setup";
  int64_t scratch_live_ = 0, scratchpad_at_peak_ = 0, scratchpad_max_ = 0;
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

// The same geometry with its operand and destination dtypes (oneDNN's scratchpad depends on them).
MatmulGeometry typed(MatmulGeometry g, DType operands, DType dst) {
  g.a_dtype = g.b_dtype = operands;
  g.dst_dtype = dst;
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

// The attention core's views: heads (B, H, T, d_k) of a (B, T, D) tensor, and (B, H, T, T) score blocks.
struct AttnGeometry {
  int64_t b, h, t, d, dk, td, tt_elems, htt;  // td = T·D, tt_elems = T·T, htt = H·T·T (checked when built)
  float scale;
  AttnGeometry(CheckedInt b_, CheckedInt h_, CheckedInt t_, CheckedInt d_)
      : b(b_.value()), h(h_.value()), t(t_.value()), d(d_.value()), dk((d_ / h_).value()), td((t_ * d_).value()),
        tt_elems((t_ * t_).value()), htt((h_ * t_ * t_).value()),
        scale(1.0f / std::sqrt(static_cast<float>(dk))) {}
  std::array<int64_t, 4> heads() const { return {b, h, t, dk}; }
  std::array<int64_t, 4> head_strides() const { return {td, dk, d, 1}; }
  std::array<int64_t, 4> heads_t() const { return {b, h, dk, t}; }
  std::array<int64_t, 4> head_t_strides() const { return {td, dk, 1, d}; }
  std::array<int64_t, 4> tt() const { return {b, h, t, t}; }
  std::array<int64_t, 4> tt_strides() const { return {htt, tt_elems, t, 1}; }
  std::array<int64_t, 4> tt_t_strides() const { return {htt, tt_elems, 1, t}; }
};

// The whole step, replayed: memory estimate out, and (if `matmuls`) every matmul call recorded.
// Precision (model/precision.h): P, G = parameter and gradient dtypes, A = the bf16 region's dtype; with the
// weight cache (amp-bf16) each matmul weight's bf16 copy "<name>.bf16" is allocated at its first use in forward
// and freed after its last use in backward, exactly where model/transformer.cpp does.
MemoryEstimate replay_step(const ModelConfig& c, const MemoryEstimateOptions& o, std::vector<StepMatmul>* matmuls) {
  const CheckedInt b = c.batch_size, t = c.context_length, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const CheckedInt n = b * t, h = c.num_heads, btt = b * h * t * t;
  const bool swiglu = c.ffn == FfnKind::swiglu;
  const DTypePlan plan = c.dtypes();
  const DType A = plan.act, F32 = DType::f32;
  const bool mixed = A != F32;
  const bool flash = c.attention == AttentionKind::flash;
  const CheckedInt threads = num_threads(), dk = d / h;  // flash attention's per-thread workspaces
  Replay r(o.onednn_scratchpad, o.live_at_peak, o.step_events, matmuls);

  // Parameters, gradients (and, in steady state, the optimizer state): one block per named tensor of the layout
  // (model/layout.h), whose units are model/transformer.h's: the embeddings, each layer, the head.
  const ParameterLayout layout = parameter_layout(c);
  struct Param { TensorName name; CheckedInt elements; };
  std::vector<Param> params;
  for (const ParamSpec& p : layout.params) params.push_back({{p.layer < 0 ? kTop : p.layer, p.suffix}, p.numel()});
  const std::vector<std::pair<int, int>>& units = layout.units;
  // ZeRO (optim/zero.h): stage ≥ 1 keeps the optimizer state of this rank's segments only, stage ≥ 2 the
  // gradients' shards (the full ones exist per unit in backward), stage 3 the parameters' shards (the full ones
  // per unit while in use).
  const int64_t stage = c.zero_stage;
  const int ranks = o.data_parallel_ranks, rank = o.data_parallel_rank;
  CheckedInt num_parameters = 0;
  for (const Param& p : params) {
    if (stage < 3) r.alloc(p.name, Category::parameter, p.elements, plan.param, true);
    if (stage < 2) r.alloc({p.name.layer, p.name.suffix, ".grad"}, Category::gradient, p.elements, plan.grad, true);
    num_parameters += p.elements;
  }
  std::vector<ShardSegment> segments;
  std::vector<int64_t> mine(params.size(), 0);  // this rank's elements of each parameter
  if (stage >= 1) {
    std::vector<int64_t> sizes;
    for (const Param& p : params) sizes.push_back(p.elements.value());
    segments = owned_segments(sizes, rank, ranks);
    for (const ShardSegment& s : segments) mine[s.param] = s.count;
  }
  for (const ShardSegment& s : segments) {
    const Param& p = params[s.param];
    if (stage >= 2) r.alloc({p.name.layer, p.name.suffix, ".grad.shard"}, Category::gradient, s.count, plan.grad, true);
    if (stage == 3) r.alloc({p.name.layer, p.name.suffix, ".shard"}, Category::parameter, s.count, plan.param, true);
  }
  auto optimizer_state = [&](const Param& p, CheckedInt elements) {
    if (plan.master_weights) {
      r.alloc({p.name.layer, p.name.suffix, ".master"}, Category::optimizer_state, elements, DType::f32, true);
    }
    r.alloc({p.name.layer, p.name.suffix, ".exp_avg"}, Category::optimizer_state, elements, DType::f32, true);
    r.alloc({p.name.layer, p.name.suffix, ".exp_avg_sq"}, Category::optimizer_state, elements, DType::f32, true);
  };
  if (o.optimizer_state && stage >= 1) {
    for (const ShardSegment& s : segments) optimizer_state(params[s.param], s.count);
  } else if (o.optimizer_state) {
    for (const Param& p : params) optimizer_state(p, p.elements);
  }
  // The hooks at unit boundaries (model/transformer.h ParameterHooks), as optim/zero.cpp implements them.
  const int head_unit = layout.head_unit();
  auto gather = [&](int u) {
    if (stage != 3) return;
    for (int i = units[u].first; i < units[u].second; ++i) r.alloc(params[i].name, Category::parameter, params[i].elements, plan.param);
  };
  auto release = [&](int u) {
    if (stage != 3) return;
    for (int i = units[u].first; i < units[u].second; ++i) r.free(params[i].name);
  };
  auto gather_head = [&] {
    gather(head_unit);
    if (c.tie_embeddings) gather(0);
  };
  auto release_head = [&] {
    release(head_unit);
    if (c.tie_embeddings) release(0);
  };
  auto create_grads = [&](int u) {
    if (stage < 2) return;
    for (int i = units[u].first; i < units[u].second; ++i) {
      r.alloc({params[i].name.layer, params[i].name.suffix, ".grad"}, Category::gradient, params[i].elements, plan.grad);
    }
  };
  auto reduce_grads = [&](int u) {
    if (stage < 2) return;
    for (int i = units[u].first; i < units[u].second; ++i) {
      if (ranks > 1 && plan.grad == DType::bf16) {  // float32 temporaries around the reduce-scatter
        r.alloc(top("comm.bucket"), Category::temporary, params[i].elements);
        if (mine[i] > 0) r.alloc(top("comm.shard"), Category::temporary, mine[i]);
        r.free(top("comm.bucket"));
        if (mine[i] > 0) r.free(top("comm.shard"));
      }
      r.free({params[i].name.layer, params[i].name.suffix, ".grad"});
    }
  };
  if (o.batch_tensors) {
    r.alloc(top("batch.tokens"), Category::activation, n, DType::i32, true);
    r.alloc(top("batch.targets"), Category::activation, n, DType::i32, true);
  }

  // amp-bf16's weight cache: the bf16 copy of matmul weight `index` (into the layout), cast at first use, freed
  // after the last.
  auto cache_weight = [&](int index) {
    const Param& p = params[static_cast<size_t>(index)];
    if (plan.weight_cache) r.alloc({p.name.layer, p.name.suffix, ".bf16"}, Category::parameter, p.elements, DType::bf16);
  };
  auto release_weight = [&](int index) {
    const Param& p = params[static_cast<size_t>(index)];
    if (plan.weight_cache) r.free({p.name.layer, p.name.suffix, ".bf16"});
  };

  const AttnGeometry ag(b, h, t, d);
  const int64_t n_ = n.value(), d_ = d.value(), f_ = f.value(), v_ = v.value();
  auto lin_fwd = [&](TensorName out, Category cat, DType out_dtype, int64_t in, int64_t outf, const char* op) {
    r.alloc(out, cat, n * outf, out_dtype);
    r.matmul(typed(linear_fwd(n_, in, outf), A, out_dtype), op);
  };
  // dX (dtype dx_dtype) then dW (the gradient's dtype, accumulated).
  auto lin_bwd = [&](int64_t in, int64_t outf, bool acc, DType dx_dtype, const char* op) {
    r.matmul(typed(linear_dx(n_, in, outf, acc), A, dx_dtype), op);
    r.matmul(typed(linear_dw(n_, in, outf), A, plan.grad), op);
  };
  auto attn_mm = [&](const MatmulGeometry& g) { r.matmul(typed(g, A, A), "attention"); };
  const char* gate = swiglu ? "ffn.gated" : "ffn.silu_out";

  // The attention core of layer i: naive keeps probs and ctx, flash lse and ctx (a workspace per thread for the
  // call).
  auto attention_core = [&](int32_t i) {
    if (flash) {
      r.alloc({i, "attn.lse"}, Category::activation, b * h * t);
      r.alloc({i, "attn.ctx"}, Category::activation, n * d, A);
      r.alloc({i, "attn.workspace"}, Category::temporary, threads * flash_forward_workspace_floats(dk.value()));
      r.free({i, "attn.workspace"});
    } else {
      r.alloc({i, "attn.probs"}, Category::activation, btt, A);
      r.alloc({i, "attn.ctx"}, Category::activation, n * d, A);
      attn_mm(geometry(4, ag.heads(), ag.head_strides(), ag.heads_t(), ag.head_t_strides(), ag.tt(), ag.tt_strides(),
                       ag.scale, false));
      attn_mm(geometry(4, ag.tt(), ag.tt_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(), 1.0f,
                       false));
    }
  };
  const bool recompute_attention = c.recompute == Recompute::attention, recompute_full = c.recompute == Recompute::full;
  const char* attention_core_saved = flash ? "attn.lse" : "attn.probs";  // what the core keeps beyond q, k, v
  // One block's forward (model/transformer.cpp block_forward): run in forward, and again in backward under
  // recompute = full. Everything it allocates but its output "ffn_residual" is what it saves — listed in the
  // order recompute = full frees them: the runtime drops its saved tensors member by member (LayerSaved's
  // declaration order: the norms', the linears' inputs, the attention core's, the ffn's), and a tensor goes
  // when its last holder lets go.
  const std::vector<const char*> block_saved = [&] {
    std::vector<const char*> saved = {"attn_norm.rstd", "attn_residual", "ffn_norm.rstd", "attn_norm.out"};
    if (flash) {
      for (const char* t : {"attn.q", "attn.k", "attn.v", "attn.ctx"}) saved.push_back(t);
      if (!recompute_attention) saved.push_back("attn.lse");
    } else {
      for (const char* t : {"attn.ctx", "attn.q", "attn.k", "attn.v"}) saved.push_back(t);
      if (!recompute_attention) saved.push_back("attn.probs");
    }
    for (const char* t : {"ffn_norm.out", gate, "ffn.w1_out"}) saved.push_back(t);
    if (swiglu) saved.push_back("ffn.w3_out");
    return saved;
  }();
  auto block_forward = [&](int32_t i) {
    const LayerParamIndex& w = layout.layers[static_cast<size_t>(i)];
    r.alloc({i, "attn_norm.out"}, Category::activation, n * d, A);
    r.alloc({i, "attn_norm.rstd"}, Category::activation, n);
    for (const auto& [weight, out] : {std::pair{w.wq, "attn.q"}, std::pair{w.wk, "attn.k"}, std::pair{w.wv, "attn.v"}}) {
      cache_weight(weight);
      lin_fwd({i, out}, Category::activation, A, d_, d_, "linear");
    }
    attention_core(i);
    if (recompute_attention) r.free({i, attention_core_saved});
    cache_weight(w.wo);
    lin_fwd({i, "attn.out"}, Category::temporary, F32, d_, d_, "linear");
    r.alloc({i, "attn_residual"}, Category::activation, n * d);
    r.free({i, "attn.out"});
    r.alloc({i, "ffn_norm.out"}, Category::activation, n * d, A);
    r.alloc({i, "ffn_norm.rstd"}, Category::activation, n);
    cache_weight(w.w1);
    if (swiglu) cache_weight(w.w3);
    cache_weight(w.w2);
    lin_fwd({i, "ffn.w1_out"}, Category::activation, A, d_, f_, "linear");
    if (swiglu) lin_fwd({i, "ffn.w3_out"}, Category::activation, A, d_, f_, "linear");
    r.alloc({i, gate}, Category::activation, n * f, A);
    lin_fwd({i, "ffn.out"}, Category::temporary, F32, f_, d_, "linear");
    r.alloc({i, "ffn_residual"}, Category::activation, n * d);
    r.free({i, "ffn.out"});
  };

  // ---------------------------------------------------------------- forward
  r.mark_step_start();
  r.set_phase(Phase::forward);
  gather(0);
  r.alloc(top("tok_emb.out"), Category::activation, n * d);
  release(0);
  TensorName x = top("tok_emb.out");  // the residual stream tensor entering the next layer
  for (int32_t i = 0; i < c.num_layers; ++i) {
    gather(i + 1);
    block_forward(i);
    if (recompute_full) {  // only the block's input (the previous output) stays
      for (const char* saved : block_saved) r.free({i, saved});
      for (int w = units[static_cast<size_t>(i) + 1].first; w < units[static_cast<size_t>(i) + 1].second; ++w) {
        if (layout.params[static_cast<size_t>(w)].is_matmul_weight()) release_weight(w);
      }
    }
    release(i + 1);
    x = {i, "ffn_residual"};
  }
  gather_head();
  r.alloc(top("final_norm.out"), Category::activation, n * d, A);
  r.alloc(top("final_norm.rstd"), Category::activation, n);
  cache_weight(layout.lm_head);
  lin_fwd(top("lm_head.logits"), Category::activation, A, d_, v_, "lm_head");
  release_head();
  r.alloc(top("cross_entropy.row_loss"), Category::temporary, n);
  r.free(top("cross_entropy.row_loss"));

  // ---------------------------------------------------------------- backward
  r.set_phase(Phase::backward);
  create_grads(head_unit);
  if (c.tie_embeddings) create_grads(0);
  gather_head();
  r.alloc(top("final_norm.grad_out"), Category::temporary, n * d);
  lin_bwd(d_, v_, false, F32, "lm_head");
  r.free(top("final_norm.out"));   // lm_head's saved input
  release_weight(layout.lm_head);
  r.free(top("lm_head.logits"));   // the buffer that held probs, then dlogits
  r.alloc(top("residual.grad"), Category::temporary, n * d);
  r.free(x);                       // final norm's saved input
  r.free(top("final_norm.rstd"));
  r.free(top("final_norm.grad_out"));
  release_head();
  reduce_grads(head_unit);
  for (int32_t i = static_cast<int32_t>(c.num_layers) - 1; i >= 0; --i) {
    const TensorName layer_input = i == 0 ? top("tok_emb.out") : TensorName{i - 1, "ffn_residual"};
    const LayerParamIndex& w = layout.layers[static_cast<size_t>(i)];
    create_grads(i + 1);
    gather(i + 1);
    if (recompute_full) {
      r.set_phase(Phase::recompute);
      block_forward(i);
      r.free({i, "ffn_residual"});  // the recomputed output is not needed
      r.set_phase(Phase::backward);
    }
    r.alloc({i, "ffn_norm.grad_out"}, Category::temporary, n * d);
    if (mixed) r.alloc({i, "ffn.grad_out"}, Category::temporary, n * d, A);  // cast of the residual gradient
    r.alloc({i, "ffn.grad_act"}, Category::temporary, n * f, A);
    lin_bwd(f_, d_, false, A, "linear");
    r.free({i, gate});
    r.alloc({i, "ffn.grad_w1_out"}, Category::temporary, n * f, A);
    if (swiglu) {
      r.alloc({i, "ffn.grad_w3_out"}, Category::temporary, n * f, A);
      r.free({i, "ffn.grad_act"});
      r.free({i, "ffn.w1_out"});
      r.free({i, "ffn.w3_out"});
      lin_bwd(d_, f_, false, F32, "linear");
      r.free({i, "ffn.grad_w3_out"});
      lin_bwd(d_, f_, true, F32, "linear");
    } else {
      r.free({i, "ffn.grad_act"});
      r.free({i, "ffn.w1_out"});
      lin_bwd(d_, f_, false, F32, "linear");
    }
    r.free({i, "ffn_norm.out"});  // the last linear to use it has run
    r.free({i, "ffn.grad_w1_out"});
    if (mixed) r.free({i, "ffn.grad_out"});
    release_weight(w.w2);
    if (swiglu) release_weight(w.w3);
    release_weight(w.w1);
    r.free({i, "attn_residual"});  // ffn norm's saved input
    r.free({i, "ffn_norm.rstd"});
    r.free({i, "ffn_norm.grad_out"});
    r.alloc({i, "attn.grad_ctx"}, Category::temporary, n * d, A);
    if (mixed) r.alloc({i, "attn.grad_out"}, Category::temporary, n * d, A);
    lin_bwd(d_, d_, false, A, "linear");
    // Flash attention keeps its output until its own backward, unless the core is recomputed.
    if (!flash || recompute_attention) r.free({i, "attn.ctx"});
    if (mixed) r.free({i, "attn.grad_out"});
    release_weight(w.wo);
    if (recompute_attention) {
      r.set_phase(Phase::recompute);
      attention_core(i);
      if (!flash) r.free({i, "attn.ctx"});  // the naive backward does not need the recomputed output
      r.set_phase(Phase::backward);
    }
    for (const char* g : {"attn.grad_q", "attn.grad_k", "attn.grad_v"}) r.alloc({i, g}, Category::temporary, n * d, A);
    if (flash) {
      r.alloc({i, "attn.grad_workspace"}, Category::temporary, threads * flash_backward_workspace_floats(t.value(), dk.value()));
      r.free({i, "attn.grad_workspace"});
      for (const char* saved : {"attn.q", "attn.k", "attn.v", "attn.ctx", "attn.lse"}) r.free({i, saved});
    } else {
    r.alloc({i, "attn.grad_probs"}, Category::temporary, btt, A);
    attn_mm(geometry(4, ag.heads(), ag.head_strides(), ag.heads_t(), ag.head_t_strides(), ag.tt(), ag.tt_strides(),
                     1.0f, false));  // dP = dC Vᵀ
    attn_mm(geometry(4, ag.tt(), ag.tt_t_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(), 1.0f,
                     false));  // dV = Pᵀ dC
    r.free({i, "attn.probs"});
    r.free({i, "attn.v"});
    attn_mm(geometry(4, ag.tt(), ag.tt_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(),
                     ag.scale, false));  // dQ = dS K
    r.free({i, "attn.k"});
    attn_mm(geometry(4, ag.tt(), ag.tt_t_strides(), ag.heads(), ag.head_strides(), ag.heads(), ag.head_strides(),
                     ag.scale, false));  // dK = dSᵀ Q
    r.free({i, "attn.q"});
    r.free({i, "attn.grad_probs"});
    }
    r.free({i, "attn.grad_ctx"});
    r.alloc({i, "attn_norm.grad_out"}, Category::temporary, n * d);
    lin_bwd(d_, d_, false, F32, "linear");
    release_weight(w.wq);
    r.free({i, "attn.grad_q"});
    lin_bwd(d_, d_, true, F32, "linear");
    release_weight(w.wk);
    r.free({i, "attn.grad_k"});
    lin_bwd(d_, d_, true, F32, "linear");
    r.free({i, "attn_norm.out"});  // q, k, v linears' saved input
    release_weight(w.wv);
    r.free({i, "attn.grad_v"});
    r.free(layer_input);
    r.free({i, "attn_norm.rstd"});
    release(i + 1);
    reduce_grads(i + 1);
    r.free({i, "attn_norm.grad_out"});
  }
  if (!c.tie_embeddings) create_grads(0);
  reduce_grads(0);
  r.free(top("residual.grad"));
  if (ranks > 1 && stage < 2) {  // stages 0, 1: one tracked bucket at a time (optim/data_parallel.cpp)
    r.set_phase(Phase::communication);
    int64_t bucket_start = 0;
    int32_t k = 0;
    for (int64_t elements : gradient_buckets(c, c.bucket_bytes())) {  // "comm.bucket.<k>", one at a time
      const TensorName bucket{kTop, "comm.bucket", {}, k++};
      r.alloc(bucket, Category::temporary, elements);
      // Stage 1 reduce-scatters: this rank's part of the bucket arrives in "comm.shard".
      const int64_t part = stage == 1 ? parameter_split(bucket_start, elements, num_parameters.value(), ranks)
                                            .counts[static_cast<size_t>(rank)] : 0;
      if (part > 0) {
        r.alloc(top("comm.shard"), Category::temporary, part);
        r.free(top("comm.shard"));
      }
      r.free(bucket);
      bucket_start += elements;
    }
  }
  r.set_phase(Phase::optimizer);  // AdamW allocates nothing in steady state; the all-gathers are in place
  MemoryEstimate est = r.finish();
  est.num_parameters = num_parameters.value();
  return est;
}

}  // namespace

MemoryEstimate estimate_step_memory(const ModelConfig& config, const MemoryEstimateOptions& options) {
  return replay_step(config, options, nullptr);
}

std::vector<StepMatmul> step_matmuls(const ModelConfig& config) {
  std::vector<StepMatmul> matmuls;
  replay_step(config, {.optimizer_state = true, .onednn_scratchpad = false, .batch_tensors = true, .live_at_peak = false},
              &matmuls);
  return matmuls;
}

LinearMemory memory_linear_in_batch(const ModelConfig& config, const MemoryEstimateOptions& options, bool check_batches) {
  MemoryEstimateOptions totals = options;
  totals.live_at_peak = false;
  auto peak_at = [&](int64_t batch) {
    ModelConfig c = config;
    c.batch_size = batch;
    return estimate_step_memory(c, totals).peak_total;
  };
  const CheckedInt p1 = peak_at(1), p2 = peak_at(2);
  LinearMemory lin{(p2 - p1).value(), (p1 - (p2 - p1)).value(), check_batches, {1, 2}};
  if (!check_batches) return lin;
  for (int64_t batch : {3, 4, 8}) {
    try {
      if (peak_at(batch) != (CheckedInt(lin.per_sample) * batch + lin.fixed).value()) lin.exact = false;
      lin.batches_checked.push_back(batch);
    } catch (const SizeOverflow&) {
      break;  // a batch this large does not fit int64 bytes: the check stops at the largest that does
    }
  }
  return lin;
}

int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options) {
  LinearMemory fit{0, 0, false, {}};  // no guess (start the search at 1) if even B = 2 overflows
  try {
    fit = memory_linear_in_batch(config, options);
  } catch (const SizeOverflow&) {
  }
  return max_batch_in_budget(config, budget, options, fit);
}

int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options,
                            const LinearMemory& lin) {
  ModelConfig c = config;
  MemoryEstimateOptions totals = options;
  totals.live_at_peak = false;
  auto fits = [&](int64_t batch) {
    c.batch_size = batch;
    try {
      return estimate_step_memory(c, totals).peak_total <= budget;
    } catch (const SizeOverflow&) {
      return false;
    }
  };
  if (!fits(1)) return 0;
  const int64_t guess = lin.per_sample > 0 && budget > lin.fixed ? std::max<int64_t>((budget - lin.fixed) / lin.per_sample, 1) : 1;
  // Bracket: lo fits, hi does not (galloping from the guess), then bisect.
  int64_t lo = 1, hi = guess;
  if (fits(guess)) {
    lo = guess;
    hi = guess + 1;
    for (int64_t step = 1; fits(hi); step *= 2) {
      lo = hi;
      if (hi > std::numeric_limits<int64_t>::max() / 4) return lo;  // beyond any batch a byte count can hold
      hi += step;
    }
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

ParameterStateLayout parameter_state_layout(Precision precision, GradDType grad_dtype) {
  const DTypePlan plan = dtype_plan(precision, grad_dtype);
  ParameterStateLayout l{};
  l.precision = precision;
  l.grad_dtype = grad_dtype;
  l.value_bytes = dtype_bytes(plan.param);
  l.grad_bytes = dtype_bytes(plan.grad);
  l.optimizer_bytes = plan.master_weights ? 12 : 8;  // (float32 master +) m + v
  l.weight_cache_bytes = plan.weight_cache ? 2 : 0;
  switch (precision) {
    case Precision::fp32:
      l.name = "fp32", l.source = "float32 everywhere: 4 + 4 + 8";
      break;
    case Precision::amp_bf16:
      l.name = "amp-bf16", l.source = "PyTorch autocast: fp32 state + bf16 weight copies during the step";
      break;
    case Precision::bf16:
      l.name = plan.grad == DType::bf16 ? "bf16 (bf16 grads)" : "bf16 (fp32 grads)";
      l.source = plan.grad == DType::bf16 ? "ZeRO (Rajbhandari et al. 2020): 2 + 2 + 12"
                                          : "Megatron-LM: gradients accumulated in fp32, 2 + 4 + 12";
      break;
  }
  return l;
}

const std::vector<ParameterStateLayout>& parameter_state_layouts() {
  static const std::vector<ParameterStateLayout> layouts = [] {
    std::vector<ParameterStateLayout> all;
    for (const PrecisionSetting& s : precision_settings()) all.push_back(parameter_state_layout(s.precision, s.grad_dtype));
    return all;
  }();
  return layouts;
}

}  // namespace reckon
