#include "estimators/replay.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "model/layout.h"
#include "ops/attention.h"
#include "ops/cast.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/ffn.h"
#include "ops/linear.h"
#include "ops/flash_attention.h"
#include "ops/residual.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "ops/activation.h"
#include "optim/adamw.h"
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

// The runtime's names of a norm's output and statistics (mean: layernorm only).
struct NormNames {
  const char *out, *mean, *rstd, *gain;  // gain: a unit-offset norm's 1 + weight
};
constexpr NormNames kAttnNorm{"attn_norm.out", "attn_norm.mean", "attn_norm.rstd", "attn_norm.gain"};
constexpr NormNames kFfnNorm{"ffn_norm.out", "ffn_norm.mean", "ffn_norm.rstd", "ffn_norm.gain"};
constexpr NormNames kFinalNorm{"final_norm.out", "final_norm.mean", "final_norm.rstd", "final_norm.gain"};
constexpr NormNames kAttnPostNorm{"attn_post_norm.out", "attn_post_norm.mean", "attn_post_norm.rstd",
                                  "attn_post_norm.gain"};
// qk_norm's: its input (the projection), output (the attention core's q or k), 1/rms, gain and backward's dX.
struct QkNormNames {
  const char *input, *out, *rstd, *gain, *grad_in, *grad_out;
};
constexpr QkNormNames kQNorm{"attn.q_proj",      "attn.q_norm.out",     "attn.q_norm.rstd",
                             "attn.q_norm.gain", "attn.q_norm.grad_in", "attn.grad_q"};
constexpr QkNormNames kKNorm{"attn.k_proj",      "attn.k_norm.out",     "attn.k_norm.rstd",
                             "attn.k_norm.gain", "attn.k_norm.grad_in", "attn.grad_k"};
constexpr NormNames kFfnPostNorm{"ffn_post_norm.out", "ffn_post_norm.mean", "ffn_post_norm.rstd", "ffn_post_norm.gain"};

// Integer replay of allocations and frees: current bytes per category, the peak (first moment reached), and
// the live set at that moment. Every size is CheckedInt arithmetic: a config whose bytes do not fit int64
// throws SizeOverflow instead of wrapping.
class Ledger {
 public:
  // `bytes` false: the counts alone are wanted; allocations and frees are not tracked (matmuls still recorded).
  Ledger(bool scratchpad, bool keep_log, bool step_events, std::vector<StepMatmul>* matmuls, bool bytes = true)
      : scratchpad_(scratchpad),
        keep_log_(keep_log || step_events),
        step_events_(step_events),
        bytes_(bytes),
        matmuls_(matmuls) {}

  // What was allocated so far (parameters, gradients, state, the batch) is live before the step begins: the
  // step's events, compared with the runtime's timeline of one step, start here.
  void mark_step_start() { step_start_ = static_cast<int64_t>(log_.size()); }

  // `persistent`: a block that lives through the step (parameters, gradients, optimizer state, the batch) and is
  // never freed, so it needs no entry in the live set (only in the log, for the live set at the peak).
  void alloc(TensorName name, Category cat, CheckedInt elements, DType dtype = DType::f32, bool persistent = false) {
    if (!bytes_) return;
    const int64_t raw = (dtype_bytes(dtype) * elements).value();
    if (raw > kMaxAllocationBytes) {  // a count that fits int64 but a tensor the allocator would refuse
      throw SizeOverflow(fmt::format("{} would be one tensor of {} bytes, above the largest allocation ({} bytes)",
                                     name.str(), raw, kMaxAllocationBytes));
    }
    const int64_t bytes = aligned_size(raw);
    if (!persistent) {
      std::vector<Named>& slot = live_slot(name);
      for (const Named& e : slot) {
        if (e.name == name) throw std::logic_error("memory estimate: tensor allocated twice: " + name.str());
      }
      slot.push_back({name, Live{cat, bytes}});
    }
    if (keep_log_) log_.push_back({name, cat, bytes, true});
    // The first moment the total reaches a new high; without a log, no live set is rebuilt (0 events).
    if (ledger_.add(cat, bytes, static_cast<int64_t>(log_.size()))) {
      peak_name_ = name;
      peak_phase_label_ = phase_label_;
      scratchpad_at_peak_ = scratch_live_;
    }
  }

  void free(TensorName name) {
    if (!bytes_) return;
    std::vector<Named>& slot = live_slot(name);
    auto it = std::find_if(slot.rbegin(), slot.rend(), [&](const Named& e) { return e.name == name; });
    if (it == slot.rend()) throw std::logic_error("memory estimate: free of unknown tensor " + name.str());
    const Live live = it->live;
    *it = slot.back();
    slot.pop_back();
    if (keep_log_) log_.push_back({name, live.category, live.bytes, false});
    ledger_.remove(live.category, live.bytes);
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
  Phase phase() const { return phase_; }

  // The estimate; the live set at the peak is rebuilt from the event log (one pass), not copied at every new
  // high (which made the replay quadratic in num_layers).
  MemoryEstimate finish() {
    MemoryEstimate e;
    for (Category c : all_categories()) {
      e.peak_breakdown[static_cast<int>(c)] = ledger_.peak_breakdown(c).value();
      e.category_peak[static_cast<int>(c)] = ledger_.category_peak(c).value();
    }
    e.peak_total = ledger_.peak_total().value();
    e.scratchpad_at_peak = scratchpad_at_peak_;
    e.scratchpad_max = scratchpad_max_;
    e.step_end_total = ledger_.total().value();
    if (ledger_.peak_total() > 0) e.peak_moment = fmt::format("{}: {} allocated", peak_phase_label_, peak_name_.str());
    std::unordered_map<TensorName, Live, TensorNameHash> at_peak;
    for (int64_t i = 0; i < ledger_.peak_event(); ++i) {
      const Event& ev = log_[i];
      if (ev.alloc)
        at_peak.emplace(ev.name, Live{ev.category, ev.bytes});
      else
        at_peak.erase(ev.name);
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
  bool bytes_;
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
  PeakLedger<CheckedInt> ledger_;  // runtime/ledger.h, as the tracking allocator keeps it
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

// The step, in the model's order. Each method mirrors one part of model/transformer.cpp (or optim/): the same
// allocations and frees in the same order, each op's count from the function its kernel records.
class StepReplay {
 public:
  StepReplay(const ModelConfig& c, const MemoryEstimateOptions& o, const ReplayOutputs& out)
      : c_(c),
        o_(o),
        out_(out),
        r_(o.onednn_scratchpad, o.live_at_peak, o.step_events, out.matmuls, !out.counts_only),
        b(c.batch_size),
        t(c.context_length),
        d(c.d_model),
        f(c.d_ff),
        v(c.vocab_size),
        h(c.num_heads),
        n(b * t),
        btt(b * h * t * t),
        qw(CheckedInt(c.num_heads) * c.head_size()),
        kvw(CheckedInt(c.kv_heads()) * c.head_size()),
        threads(num_threads()),
        n_(n.value()),
        d_(d.value()),
        f_(f.value()),
        v_(v.value()),
        plan(c.dtypes()),
        A(plan.act),
        P(plan.param),
        G(plan.grad),
        mixed(A != F32),
        flash(c.attention == AttentionKind::flash),
        gated(ffn_gated(c.ffn)),
        act_fn(ffn_activation(c.ffn)),
        rope(c.position == Position::rope),
        recompute_attention(c.recompute == Recompute::attention),
        recompute_full(c.recompute == Recompute::full),
        gate(gated                        ? "ffn.gated"
             : act_fn == Activation::silu ? "ffn.silu_out"
                                          : "ffn.gelu_out"),
        core_saved(flash ? "attn.lse" : "attn.probs"),
        stage(c.zero_stage),
        ranks(o.data_parallel_ranks),
        rank(o.data_parallel_rank),
        layout(parameter_layout(c)),
        shape{b.value(),
              t.value(),
              h.value(),
              c.kv_heads(),
              c.head_size(),
              0,
              c.attention_scores(0).softcap,
              c.attention_scores(0).alibi_bias_max},
        qw_(qw.value()),
        kvw_(kvw.value()) {}

  MemoryEstimate run() {
    parameters_and_state();
    r_.mark_step_start();
    if (stage < 2) {  // zero_grad at the step's start (stages 2, 3 create their gradients zeroed in backward)
      r_.set_phase(Phase::optimizer);
      zero_grad(0, static_cast<int>(params.size()));
    }
    // Gradient accumulation: K micro-batches, one update. The third and later repeat the second's events exactly,
    // so unless every event is kept, two are replayed and the second's counts and matmul calls taken K − 1 times
    // (an estimate at K = 65536 costs two micro-batches).
    const int64_t micro = c_.micro_batches(), replayed = o_.step_events ? micro : std::min<int64_t>(micro, 2);
    std::vector<FlatCount> before_second;
    std::vector<StepMatmul> matmuls_before_second;
    for (int64_t k = 0; k < replayed; ++k) {
      if (k == 1) {
        before_second = counts_;
        if (out_.matmuls != nullptr) matmuls_before_second = *out_.matmuls;
      }
      accumulating_ = k > 0;
      forward();
      backward();
    }
    if (replayed < micro) repeat_second_micro_batch(before_second, matmuls_before_second, micro - replayed);
    gradient_reduction();
    optimizer_step();
    if (out_.counts != nullptr) {
      for (const FlatCount& f : counts_) (*out_.counts)[OpKey{std::string(f.op), f.phase}] += f.count;
    }
    MemoryEstimate est = r_.finish();
    est.num_parameters = num_parameters.value();
    return est;
  }

 private:
  static constexpr DType F32 = DType::f32;
  struct Param {
    TensorName name;
    CheckedInt elements;
  };
  struct FlatCount {
    std::string_view op;
    Phase phase;
    OpCount count;
  };

  // The second micro-batch's counts and matmul calls (what was added since `counts` and `matmuls`, whose entries
  // come first in the same order) added `times` more times. Checked: a count past int64 is a SizeOverflow.
  void repeat_second_micro_batch(const std::vector<FlatCount>& counts, const std::vector<StepMatmul>& matmuls,
                                 int64_t times) {
    auto more = [times](int64_t now, int64_t then) { return (CheckedInt(now - then) * times).value(); };
    for (size_t i = 0; i < counts_.size(); ++i) {
      const OpCount then = i < counts.size() ? counts[i].count : OpCount{};
      OpCount& c = counts_[i].count;
      c += OpCount{more(c.calls, then.calls),
                   more(c.matmul_flops, then.matmul_flops),
                   more(c.other_flops, then.other_flops),
                   more(c.bytes_read, then.bytes_read),
                   more(c.bytes_written, then.bytes_written),
                   0.0};
    }
    if (out_.matmuls == nullptr) return;
    for (size_t i = 0; i < out_.matmuls->size(); ++i) {
      StepMatmul& m = (*out_.matmuls)[i];
      m.calls = (CheckedInt(m.calls) + more(m.calls, i < matmuls.size() ? matmuls[i].calls : 0)).value();
    }
  }

  // ---- counts: one call of `op` under the current phase (collectives: under communication), as OpRecord does
  void count(const char* op, OpCount c) { count_in(r_.phase(), op, c); }
  // A few dozen op × phase keys per step: a flat list searched in place (no string per call), into the map at the end.
  void count_in(Phase phase, const char* op, OpCount c) {
    if (out_.counts == nullptr) return;
    c.calls = 1;
    const std::string_view name(op);
    for (FlatCount& f : counts_) {
      if (f.phase == phase && f.op == name) {
        f.count += c;
        return;
      }
    }
    counts_.push_back({name, phase, c});
  }
  void collective(const char* op, CheckedInt in, CheckedInt out) {
    count_in(Phase::communication, op, OpCount{1, 0, 0, in.value(), out.value(), 0.0});
  }
  void matmul(const MatmulGeometry& g, const char* op) {
    r_.matmul(g, op);
    count(op, OpCount{1, matmul_flops(g), matmul_other_flops(g), matmul_bytes_read(g), matmul_bytes_written(g), 0.0});
  }
  // A tensor an op declares (runtime/contract.h), under the name the runtime gives it.
  void alloc(TensorName name, const TensorDecl& t) { r_.alloc(name, t.category, t.elements(), t.dtype); }
  // With bias: oneDNN's bias argument (a bias of the operands' dtype) inside the one call.
  void lin_fwd(TensorName out, Category cat, DType out_dtype, int64_t in, int64_t outf, const char* op,
               bool bias = false) {
    alloc(out, linear_forward_tensors({n_, in}, outf, out_dtype, cat).out);
    MatmulGeometry g = typed(linear_fwd(n_, in, outf), A, out_dtype);
    g.bias = bias, g.bias_dtype = A;
    matmul(g, op);
  }
  // dX (dtype dx_dtype) then dW (the gradient's dtype, accumulated) [then dbias += the rows of dY (in A)].
  void lin_bwd(int64_t in, int64_t outf, bool acc, DType dx_dtype, const char* op, bool bias = false) {
    matmul(typed(linear_dx(n_, in, outf, acc), A, dx_dtype), op);
    matmul(typed(linear_dw(n_, in, outf), A, G), op);
    if (bias) {
      const CheckedInt rows = n_, cols = outf, gb = dtype_bytes(G);
      count(op, OpCount{1, 0, (rows * cols).value(), (rows * cols * dtype_bytes(A) + gb * cols).value(),
                        (gb * cols).value(), 0.0});
    }
  }
  // A linear's optional bias (index -1: none), as a matmul operand: cast with its weight, released after it.
  void cache_bias(int index) {
    if (index >= 0) cache_weight(index);
  }
  void release_bias(int index) {
    if (index >= 0) release_weight(index);
  }
  // The FFN's operands in the model's order (model/transformer.cpp FfnWeights): w1, w3, w2, then their biases.
  void ffn_weights(const LayerParamIndex& w) {
    for (int index : {w.w1, w.w3, w.w2}) {
      if (index >= 0) cache_weight(index);
    }
    for (int index : {w.b1, w.b3, w.b2}) cache_bias(index);
  }
  void attn_mm(const std::vector<MatmulGeometry>& calls) {
    for (const MatmulGeometry& g : calls) matmul(g, "attention");
  }
  // zero_grad over parameters [first, last): every gradient's bytes written once.
  void zero_grad(int first, int last) {
    CheckedInt bytes = 0;
    for (int i = first; i < last; ++i) bytes += params[static_cast<size_t>(i)].elements * dtype_bytes(G);
    count("zero_grad", OpCount{1, 0, 0, 0, bytes.value(), 0.0});
  }

  void parameters_and_state();
  // ---- the hooks at unit boundaries (model/transformer.h ParameterHooks), as optim/zero.cpp implements them
  void gather(int u);
  void release(int u);
  void gather_head() {
    gather(layout.head_unit());
    if (c_.tie_embeddings) gather(0);
  }
  void release_head() {
    release(layout.head_unit());
    if (c_.tie_embeddings) release(0);
  }
  // FSDP's mixed precision (model/layout.h gathered_in_bf16): ZeRO-3 gathers parameter i as its bf16 operand.
  bool gathered(int i) const { return gathered_in_bf16(c_, layout.params[static_cast<size_t>(i)]); }
  // ... and a tied head, whose table is gathered in float32, casts it at each use (forward, backward).
  bool fsdp_tied_head() const { return c_.tie_embeddings && gathers_bf16_operands(c_); }
  void create_grads(int u);
  void reduce_grads(int u);
  // amp-bf16's weight cache: the bf16 copy of matmul weight `index` (into the layout), cast at first use, freed
  // after the last.
  void cache_weight(int index) {
    const Param& p = params[static_cast<size_t>(index)];
    if (!plan.weight_cache || gathered(index)) return;
    alloc({p.name.layer, p.name.suffix, ".bf16"}, cast_tensor({p.elements.value()}, DType::bf16, Category::parameter));
    count("cast", cast_count(p.elements.value(), F32, DType::bf16));
  }
  void release_weight(int index) {
    const Param& p = params[static_cast<size_t>(index)];
    if (plan.weight_cache && !gathered(index)) r_.free({p.name.layer, p.name.suffix, ".bf16"});
  }
  // A cast of the float32 residual gradient into the bf16 region (mixed precision only).
  void cast_grad(TensorName name) {
    if (!mixed) return;
    alloc(name, cast_tensor({n_, d_}, A, Category::temporary));
    count("cast", cast_count(n_ * d_, F32, A));
  }
  // A norm's forward: its output and statistics (ops/norm.h: rmsnorm's rstd, layernorm's mean and rstd) under the
  // runtime's names.
  // out: the bf16 region's dtype for a norm feeding matmuls; float32 for one after a sublayer (into the residual).
  void norm(int32_t layer, const NormNames& names) { norm(layer, names, A); }
  void norm(int32_t layer, const NormNames& names, DType out) {
    unit_offset_gain(layer, names);
    const std::vector<TensorDecl> t = norm_forward_tensors(c_.norm, {n_, d_}, out);
    alloc({layer, names.out}, t[0]);
    if (layernorm) alloc({layer, names.mean}, t[1]);
    alloc({layer, names.rstd}, t.back());
    count(norm_op, norm_forward_count(c_.norm, n_, d_, c_.norm_bias, c_.norm_unit_offset ? F32 : P, out));
    if (c_.norm_unit_offset) r_.free({layer, names.gain});
  }
  // A unit-offset norm's float32 gain 1 + weight, before the norm in each direction (freed after it).
  void unit_offset_gain(int32_t layer, const NormNames& names) {
    if (!c_.norm_unit_offset) return;
    alloc({layer, names.gain}, norm_gain_tensor(d_));
    count("norm_gain", norm_gain_count(d_, P));
  }
  // qk_norm over q or k (width H·head_dim or KV·head_dim), in q's dtype; forward and backward as ops/norm runs them.
  void qk_norm_fwd(int32_t i, const QkNormNames& nm, CheckedInt width) {
    const int64_t w = width.value();
    if (c_.norm_unit_offset) {
      alloc({i, nm.gain}, norm_gain_tensor(w));
      count("norm_gain", norm_gain_count(w, P));
    }
    const std::vector<TensorDecl> t = norm_forward_tensors(NormKind::rmsnorm, {n_, w}, A);
    alloc({i, nm.out}, t[0]);
    alloc({i, nm.rstd}, t[1]);
    count("rmsnorm", norm_forward_count(NormKind::rmsnorm, n_, w, false, c_.norm_unit_offset ? F32 : P, A, A));
    if (c_.norm_unit_offset) r_.free({i, nm.gain});
  }
  void qk_norm_bwd(int32_t i, const QkNormNames& nm, CheckedInt width) {
    const int64_t w = width.value();
    r_.alloc({i, nm.grad_in}, Category::temporary, n * width, A);
    if (c_.norm_unit_offset) {
      alloc({i, nm.gain}, norm_gain_tensor(w));
      count("norm_gain", norm_gain_count(w, P));
    }
    count("rmsnorm", norm_backward_count(NormKind::rmsnorm, n_, w, false, false, c_.norm_unit_offset ? F32 : P, G, A));
    r_.free({i, nm.input});
    r_.free({i, nm.rstd});
    if (c_.norm_unit_offset) r_.free({i, nm.gain});
    r_.free({i, nm.grad_out});  // the core's dQ (dK): the norm's dX goes on in its place
  }
  // A sublayer's input without a norm before it (post norms only): the residual stream itself, or its saved cast
  // into the bf16 region.
  void saved_cast(TensorName name) {
    if (!mixed) return;
    alloc(name, cast_tensor({n_, d_}, A, Category::activation));
    count("cast", cast_count(n_ * d_, F32, A));
  }
  // The backward of a post norm: its input gradient into a new float32 temporary; frees its input and statistics.
  void post_norm_bwd(int32_t layer, const char* grad_in, const char* input, const NormNames& names) {
    r_.alloc({layer, grad_in}, Category::temporary, n * d);
    norm_bwd(layer, names, false);
    r_.free({layer, input});
    free_norm_stats(layer, names);
  }
  // Its backward (dX written, or accumulated into the residual gradient); the statistics are freed by the caller in
  // the runtime's order (free_norm_stats).
  void norm_bwd(int32_t layer, const NormNames& names, bool accumulate) {
    unit_offset_gain(layer, names);
    count(norm_op, norm_backward_count(c_.norm, n_, d_, c_.norm_bias, accumulate, c_.norm_unit_offset ? F32 : P, G));
  }
  // After the backward: the statistics, then a unit-offset norm's gain (the kernel frees what it saved, the norm its
  // gain when it returns).
  void free_norm_stats(int32_t layer, const NormNames& names) {
    if (layernorm) r_.free({layer, names.mean});
    r_.free({layer, names.rstd});
    if (c_.norm_unit_offset) r_.free({layer, names.gain});
  }

  void forward();
  void block_forward(int32_t i);
  void attention_core(int32_t i);
  std::vector<const char*> block_saved() const;
  // Layer i's input: the embedding's output, or layer i − 1's.
  static TensorName layer_input(int32_t i) { return i == 0 ? top("tok_emb.out") : TensorName{i - 1, "ffn_residual"}; }
  void backward();
  void ffn_backward(int32_t i);
  void attention_backward(int32_t i);
  void gradient_reduction();
  void optimizer_step();

  const ModelConfig& c_;
  const MemoryEstimateOptions& o_;
  const ReplayOutputs& out_;
  Ledger r_;
  const CheckedInt b, t, d, f, v, h, n;
  const CheckedInt btt;      // B·H·T², checked up front as before (naive attention's scores)
  const CheckedInt qw, kvw;  // H·head_dim (q, the context), KV·head_dim (k, v)
  const CheckedInt threads;
  const int64_t n_, d_, f_, v_;
  const DTypePlan plan;
  const DType A, P, G;  // the bf16 region's, the parameters' and the gradients' dtypes (model/precision.h)
  const bool mixed, flash, gated;
  const Activation act_fn;  // the ffn's activation
  const bool rope, recompute_attention, recompute_full;
  const bool layernorm = c_.norm == NormKind::layernorm;
  const bool parallel = c_.parallel_block();  // one norm a layer feeds both branches
  const bool pre = c_.pre_norms(), post = c_.post_norms();
  // The layer input's holders: the attention norm (pre), else q, k, v's linears — itself in float32, its cast in the
  // bf16 region (then nothing holds it after forward).
  const char* const attn_input = pre ? kAttnNorm.out : mixed ? "attn.in" : nullptr;
  // The ffn's input: the ffn norm's output, the attention norm's (parallel), or x + attention itself (post only).
  const char* const ffn_input = parallel ? kAttnNorm.out : pre ? kFfnNorm.out : mixed ? "ffn.in" : "attn_residual";
  // The attention core's q and k (qk_norm: the norms' outputs) and their gradients into q's and k's linears.
  const bool qk_norm = c_.qk_norm;
  const char* const q_name = qk_norm ? kQNorm.out : "attn.q";
  const char* const k_name = qk_norm ? kKNorm.out : "attn.k";
  const char* const grad_q_name = qk_norm ? kQNorm.grad_in : "attn.grad_q";
  const char* const grad_k_name = qk_norm ? kKNorm.grad_in : "attn.grad_k";
  const char* const norm_op = layernorm ? "layernorm" : "rmsnorm";
  const char* const gate;        // the ffn's saved activation
  const char* const core_saved;  // what the attention core keeps beyond q, k, v
  // ZeRO (optim/zero.h): stage ≥ 1 keeps the optimizer state of this rank's segments only, stage ≥ 2 the
  // gradients' shards (the full ones exist per unit in backward), stage 3 the parameters' shards (the full ones
  // per unit while in use).
  const int64_t stage;
  const int ranks, rank;
  const ParameterLayout layout;
  const AttentionShape shape;  // without the window, which is per layer: layer_shape
  AttentionShape layer_shape(int32_t i) const {
    AttentionShape s = shape;
    s.window = c_.layer_window(i);
    return s;
  }
  bool capped() const { return shape.capped(); }
  const bool logits_capped = c_.final_logit_softcapping > 0;
  const int64_t qw_, kvw_;
  std::vector<Param> params;
  std::vector<int64_t> mine;  // this rank's elements of each parameter
  std::vector<FlatCount> counts_;
  CheckedInt num_parameters = 0;
  bool accumulating_ = false;  // a micro-batch after the step's first: stages 2, 3 add into the gradient shards
};

// Parameters, gradients (and, in steady state, the optimizer state): one block per named tensor of the layout
// (model/layout.h), whose units are model/transformer.h's: the embeddings, each layer, the head. Then the batch.
void StepReplay::parameters_and_state() {
  for (const ParamSpec& p : layout.params) params.push_back({{p.layer < 0 ? kTop : p.layer, p.suffix}, p.numel()});
  for (const Param& p : params) {
    if (stage < 3) r_.alloc(p.name, Category::parameter, p.elements, P, true);
    if (stage < 2) r_.alloc({p.name.layer, p.name.suffix, ".grad"}, Category::gradient, p.elements, G, true);
    num_parameters += p.elements;
  }
  std::vector<ShardSegment> segments;
  mine.assign(params.size(), 0);
  if (stage >= 1) {
    segments = owned_segments(layout.sizes(), rank, ranks);
    for (const ShardSegment& s : segments) mine[s.param] = s.count;
  }
  for (const ShardSegment& s : segments) {
    const Param& p = params[s.param];
    if (stage >= 2) r_.alloc({p.name.layer, p.name.suffix, ".grad.shard"}, Category::gradient, s.count, G, true);
    if (stage == 3) r_.alloc({p.name.layer, p.name.suffix, ".shard"}, Category::parameter, s.count, P, true);
  }
  auto optimizer_state = [&](const Param& p, CheckedInt elements) {
    if (plan.master_weights) {
      r_.alloc({p.name.layer, p.name.suffix, ".master"}, Category::optimizer_state, elements, F32, true);
    }
    r_.alloc({p.name.layer, p.name.suffix, ".exp_avg"}, Category::optimizer_state, elements, F32, true);
    r_.alloc({p.name.layer, p.name.suffix, ".exp_avg_sq"}, Category::optimizer_state, elements, F32, true);
  };
  if (o_.optimizer_state && stage >= 1) {
    for (const ShardSegment& s : segments) optimizer_state(params[s.param], s.count);
  } else if (o_.optimizer_state) {
    for (const Param& p : params) optimizer_state(p, p.elements);
  }
  if (o_.batch_tensors) {
    r_.alloc(top("batch.tokens"), Category::activation, n, DType::i32, true);
    r_.alloc(top("batch.targets"), Category::activation, n, DType::i32, true);
  }
}

// FSDP's mixed precision: a bf16 operand is allocated as "<name>.bf16", this rank's float32 elements cast into it.
void StepReplay::gather(int u) {
  if (stage != 3) return;
  for (int i = layout.units[u].first; i < layout.units[u].second; ++i) {
    const Param& p = params[i];
    const bool bf16_operand = gathered(i);
    const DType dtype = bf16_operand ? DType::bf16 : P;
    if (bf16_operand) {
      r_.alloc({p.name.layer, p.name.suffix, ".bf16"}, Category::parameter, p.elements, dtype);
      if (mine[i] > 0) count("cast", cast_count(mine[i], F32, DType::bf16));
    } else {
      r_.alloc(p.name, Category::parameter, p.elements, dtype);
    }
    if (ranks > 1) collective("all_gather", CheckedInt(dtype_bytes(dtype)) * mine[i], p.elements * dtype_bytes(dtype));
  }
}

void StepReplay::release(int u) {
  if (stage != 3) return;
  for (int i = layout.units[u].first; i < layout.units[u].second; ++i) {
    const Param& p = params[i];
    if (gathered(i))
      r_.free({p.name.layer, p.name.suffix, ".bf16"});
    else
      r_.free(p.name);
  }
}

void StepReplay::create_grads(int u) {
  if (stage < 2) return;
  const auto [first, last] = layout.units[u];
  for (int i = first; i < last; ++i) {
    r_.alloc({params[i].name.layer, params[i].name.suffix, ".grad"}, Category::gradient, params[i].elements, G);
  }
  zero_grad(first, last);  // created zeroed
}

// A later micro-batch's reduction (accumulating_) is received into "comm.shard" (float32 too) and added into the
// shard (op grad_accumulate; one rank: the gradient itself is added).
void StepReplay::reduce_grads(int u) {
  if (stage < 2) return;
  for (int i = layout.units[u].first; i < layout.units[u].second; ++i) {
    const bool bucket = ranks > 1 && G == DType::bf16, part = ranks > 1 && (bucket || accumulating_) && mine[i] > 0;
    if (bucket) r_.alloc(top("comm.bucket"), Category::temporary, params[i].elements);  // bf16 widened
    if (part) r_.alloc(top("comm.shard"), Category::temporary, mine[i]);
    if (ranks > 1) collective("reduce_scatter", 4 * params[i].elements, CheckedInt(4) * mine[i]);
    if (bucket) r_.free(top("comm.bucket"));
    if (accumulating_ && mine[i] > 0) count("grad_accumulate", grad_accumulate_count(mine[i], G, ranks > 1 ? F32 : G));
    if (part) r_.free(top("comm.shard"));
    r_.free({params[i].name.layer, params[i].name.suffix, ".grad"});
  }
}

// The attention core of layer i: naive keeps probs and ctx, flash lse and ctx (a workspace per thread for the
// call).
void StepReplay::attention_core(int32_t i) {
  const AttentionShape shape = layer_shape(i);
  if (flash) {
    const FlashAttentionTensors ft = flash_attention_forward_tensors(shape, A, threads.value());
    alloc({i, "attn.lse"}, ft.lse);
    alloc({i, "attn.ctx"}, ft.ctx);
    alloc({i, "attn.workspace"}, ft.workspace);
    r_.free({i, "attn.workspace"});
    count("attention", flash_attention_forward_count(shape, A));
    return;
  }
  const AttentionTensors at = attention_forward_tensors(shape, A);
  alloc({i, "attn.probs"}, at.probs);
  if (at.tanh) alloc({i, "attn.tanh"}, *at.tanh);
  alloc({i, "attn.ctx"}, at.ctx);
  const AttentionForwardMatmuls mm = attention_forward_matmuls(shape, A);
  attn_mm(mm.scores);  // scores = Q Kᵀ / √d_k
  count("attention", attention_softmax_forward_count(shape, A));
  attn_mm(mm.context);  // ctx = P V
}

// Everything a block's forward allocates but its output "ffn_residual" is what it saves — listed in the order
// recompute = full frees them: the runtime drops its saved tensors member by member (LayerSaved's declaration
// order: the norms', the linears' inputs, the attention core's, the ffn's), and a tensor goes when its last holder
// lets go.
std::vector<const char*> StepReplay::block_saved() const {
  std::vector<const char*> saved;
  auto norm_stats = [&](const NormNames& names) {
    if (layernorm) saved.push_back(names.mean);
    saved.push_back(names.rstd);
  };
  if (pre) norm_stats(kAttnNorm);
  if (pre && !parallel) {
    saved.push_back("attn_residual");  // the ffn norm's input
    norm_stats(kFfnNorm);
  }
  // q, k, v's input (parallel: the ffn holds it last; post only in float32: the layer input, kept by recompute)
  if (!parallel && attn_input != nullptr) saved.push_back(attn_input);
  if (flash) {
    for (const char* s : {q_name, k_name, "attn.v", "attn.ctx"}) saved.push_back(s);
  } else {
    for (const char* s : {"attn.ctx", q_name, k_name, "attn.v"}) saved.push_back(s);
  }
  if (!recompute_attention) saved.push_back(core_saved);
  if (!recompute_attention && !flash && capped()) saved.push_back("attn.tanh");
  // The ffn's input: a parallel block's is the attention norm's output, which goes with its last holder, the ffn.
  for (const char* s : {ffn_input, gate, "ffn.w1_out"}) saved.push_back(s);
  if (gated) saved.push_back("ffn.w3_out");
  if (post) {  // the post norms' inputs (the sublayers' outputs) and statistics
    saved.push_back("attn.out");
    norm_stats(kAttnPostNorm);
    saved.push_back("ffn.out");
    norm_stats(kFfnPostNorm);
  }
  if (qk_norm) {
    for (const QkNormNames& nm : {kQNorm, kKNorm}) {
      saved.push_back(nm.input);
      saved.push_back(nm.rstd);
    }
  }
  return saved;
}

// One block's forward (model/transformer.cpp block_forward): run in forward, and again in backward under
// recompute = full.
void StepReplay::block_forward(int32_t i) {
  const LayerParamIndex& w = layout.layers[static_cast<size_t>(i)];
  if (pre)
    norm(i, kAttnNorm);
  else
    saved_cast({i, "attn.in"});
  for (const auto& [weight, bias, out, width, qkn] :
       {std::tuple{w.wq, w.bq, "attn.q", qw_, &kQNorm}, std::tuple{w.wk, w.bk, "attn.k", kvw_, &kKNorm},
        std::tuple{w.wv, w.bv, "attn.v", kvw_, static_cast<const QkNormNames*>(nullptr)}}) {
    cache_weight(weight);
    cache_bias(bias);
    const bool normed = qk_norm && qkn != nullptr;
    lin_fwd({i, normed ? qkn->input : out}, Category::activation, A, d_, width, "linear", bias >= 0);
    if (normed) qk_norm_fwd(i, *qkn, width);
  }
  if (rope) {  // in place on q and k
    count("rope", rope_count(b.value(), t.value(), h.value(), shape.head_dim, A));
    count("rope", rope_count(b.value(), t.value(), shape.kv_heads, shape.head_dim, A));
  }
  attention_core(i);
  if (recompute_attention) r_.free({i, core_saved});
  if (recompute_attention && !flash && capped()) r_.free({i, "attn.tanh"});
  cache_weight(w.wo);
  cache_bias(w.bo);
  const Category out_category = post ? Category::activation : Category::temporary;  // post: a norm saves it
  lin_fwd({i, "attn.out"}, out_category, F32, qw_, d_, "linear", w.bo >= 0);
  if (post) norm(i, kAttnPostNorm, F32);
  alloc({i, "attn_residual"}, residual_forward_tensor({n_, d_}));
  count("residual", residual_forward_count(n_ * d_));
  r_.free({i, post ? kAttnPostNorm.out : "attn.out"});
  if (!parallel && pre) norm(i, kFfnNorm);
  if (!pre) saved_cast({i, "ffn.in"});
  ffn_weights(w);
  const FfnForwardTensors ft = ffn_forward_tensors({n_, d_}, f_, A, c_.ffn, out_category);
  lin_fwd({i, "ffn.w1_out"}, ft.w1_out.category, ft.w1_out.dtype, d_, f_, "linear", w.b1 >= 0);
  if (gated) lin_fwd({i, "ffn.w3_out"}, ft.w3_out->category, ft.w3_out->dtype, d_, f_, "linear", w.b3 >= 0);
  alloc({i, gate}, ft.act);
  count(activation_op_name(act_fn, gated),
        gated ? gated_activation_forward_count(act_fn, n_ * f_, A) : activation_forward_count(act_fn, n_ * f_, A));
  lin_fwd({i, "ffn.out"}, ft.out.category, ft.out.dtype, f_, d_, "linear", w.b2 >= 0);
  if (post) norm(i, kFfnPostNorm, F32);
  alloc({i, "ffn_residual"}, residual_forward_tensor({n_, d_}));
  count("residual", residual_forward_count(n_ * d_));
  r_.free({i, post ? kFfnPostNorm.out : "ffn.out"});
  // x + attention saved by nothing: a parallel block's partial sum; with post norms only, in the bf16 region, the ffn
  // holds its cast.
  if (parallel || (!pre && mixed)) r_.free({i, "attn_residual"});
}

void StepReplay::forward() {
  r_.set_phase(Phase::forward);
  gather(0);
  alloc(top("tok_emb.out"), embedding_forward_tensor(b.value(), t.value(), d_));
  count("embedding", embedding_forward_count(n_, d_, P, c_.scale_embeddings));
  if (layout.pos_emb >= 0) count("position_embedding", position_embedding_forward_count(b.value(), t.value(), d_, P));
  release(0);
  if (rope) {
    const RopeTensors rt = rope_tables_tensors(t.value(), shape.head_dim);
    alloc(top("rope.cos"), rt.cos);
    alloc(top("rope.sin"), rt.sin);
    count("rope", rope_tables_count(t.value(), shape.head_dim, c_.rope_frequencies()));
  }
  const std::vector<const char*> saved = block_saved();
  for (int32_t i = 0; i < c_.num_layers; ++i) {
    gather(i + 1);
    block_forward(i);
    if (recompute_full) {  // only the block's input (the previous output) stays
      for (const char* s : saved) r_.free({i, s});
      const auto [first, last] = layout.units[static_cast<size_t>(i) + 1];
      for (int p = first; p < last; ++p) {
        if (layout.params[static_cast<size_t>(p)].is_matmul_weight()) release_weight(p);
      }
    }
    release(i + 1);
    // Post norms only, bf16 region: q, k, v hold the input's cast, so nothing holds the input past its block.
    if (attn_input != nullptr && !pre && !recompute_full) r_.free(layer_input(i));
  }
  gather_head();
  norm(kTop, kFinalNorm);
  cache_weight(layout.lm_head);
  lin_fwd(top("lm_head.logits"), Category::activation, A, d_, v_, "lm_head");
  if (fsdp_tied_head()) release_weight(layout.lm_head);  // the tied head's cast goes with the table's gather
  release_head();
  if (logits_capped) alloc(top("cross_entropy.lse"), cross_entropy_lse_tensor(n_));
  alloc(top("cross_entropy.row_loss"), cross_entropy_forward_tensor(n_));
  r_.free(top("cross_entropy.row_loss"));
  count("cross_entropy", cross_entropy_forward_count(n_, v_, A, logits_capped));
}

void StepReplay::ffn_backward(int32_t i) {
  const LayerParamIndex& w = layout.layers[static_cast<size_t>(i)];
  // A parallel block's ffn writes its dX into the attention norm's grad_out, which the q, k, v linears then add to.
  if (pre) r_.alloc({i, parallel ? "attn_norm.grad_out" : "ffn_norm.grad_out"}, Category::temporary, n * d);
  if (post) post_norm_bwd(i, "ffn_post_norm.grad_in", "ffn.out", kFfnPostNorm);
  cast_grad({i, "ffn.grad_out"});
  if (post && mixed)
    r_.free(
        {i, "ffn_post_norm.grad_in"});  // cast; the float32 gradient goes  // the residual gradient in the bf16 region
  const FfnBackwardTensors bt = ffn_backward_tensors({n_, d_}, f_, A, c_.ffn);
  alloc({i, "ffn.grad_act"}, bt.grad_act);
  lin_bwd(f_, d_, false, A, "linear", w.b2 >= 0);
  r_.free({i, gate});
  alloc({i, "ffn.grad_w1_out"}, bt.grad_w1_out);
  const char* act_op = activation_op_name(act_fn, gated);
  if (gated) {
    alloc({i, "ffn.grad_w3_out"}, *bt.grad_w3_out);
    count(act_op, gated_activation_backward_count(act_fn, n_ * f_, A));
    r_.free({i, "ffn.grad_act"});
    r_.free({i, "ffn.w1_out"});
    r_.free({i, "ffn.w3_out"});
    lin_bwd(d_, f_, !pre, F32, "linear", w.b3 >= 0);  // post only: into the residual stream's gradient
    r_.free({i, "ffn.grad_w3_out"});
    lin_bwd(d_, f_, true, F32, "linear", w.b1 >= 0);
  } else {
    count(act_op, activation_backward_count(act_fn, n_ * f_, A));
    r_.free({i, "ffn.grad_act"});
    r_.free({i, "ffn.w1_out"});
    lin_bwd(d_, f_, !pre, F32, "linear", w.b1 >= 0);
  }
  if (!parallel) r_.free({i, ffn_input});  // the last linear to use it has run (parallel: q, k, v's input still)
  r_.free({i, "ffn.grad_w1_out"});
  if (mixed) r_.free({i, "ffn.grad_out"});
  if (post && !mixed) r_.free({i, "ffn_post_norm.grad_in"});
  release_weight(w.w2);
  release_bias(w.b2);
  if (gated) release_weight(w.w3);
  release_bias(w.b3);
  release_weight(w.w1);
  release_bias(w.b1);
  if (parallel || !pre) return;
  norm_bwd(i, kFfnNorm, true);
  r_.free({i, "attn_residual"});  // ffn norm's saved input
  free_norm_stats(i, kFfnNorm);
  r_.free({i, "ffn_norm.grad_out"});
}

void StepReplay::attention_backward(int32_t i) {
  const LayerParamIndex& w = layout.layers[static_cast<size_t>(i)];
  const AttentionShape shape = layer_shape(i);
  if (post) post_norm_bwd(i, "attn_post_norm.grad_in", "attn.out", kAttnPostNorm);
  r_.alloc({i, "attn.grad_ctx"}, Category::temporary, n * qw, A);
  cast_grad({i, "attn.grad_out"});
  if (post && mixed) r_.free({i, "attn_post_norm.grad_in"});
  lin_bwd(qw_, d_, false, A, "linear", w.bo >= 0);
  // Flash attention keeps its output until its own backward, unless the core is recomputed.
  if (!flash || recompute_attention) r_.free({i, "attn.ctx"});
  if (mixed) r_.free({i, "attn.grad_out"});
  if (post && !mixed) r_.free({i, "attn_post_norm.grad_in"});
  release_weight(w.wo);
  release_bias(w.bo);
  if (recompute_attention) {
    r_.set_phase(Phase::recompute);
    attention_core(i);
    if (!flash) r_.free({i, "attn.ctx"});  // the naive backward does not need the recomputed output
    r_.set_phase(Phase::backward);
  }
  r_.alloc({i, "attn.grad_q"}, Category::temporary, n * qw, A);
  r_.alloc({i, "attn.grad_k"}, Category::temporary, n * kvw, A);
  r_.alloc({i, "attn.grad_v"}, Category::temporary, n * kvw, A);
  if (flash) {
    const FlashAttentionBackwardTensors bt = flash_attention_backward_tensors(shape, A, threads.value());
    alloc({i, "attn.grad_workspace"}, bt.workspace);
    if (bt.partials) {
      alloc({i, "attn.grad_kv_partials"}, *bt.partials);
      r_.free({i, "attn.grad_kv_partials"});
    }
    r_.free({i, "attn.grad_workspace"});
    count("attention", flash_attention_backward_count(shape, A));
    for (const char* s : {q_name, k_name, "attn.v", "attn.ctx", "attn.lse"}) r_.free({i, s});
  } else {
    alloc({i, "attn.grad_probs"}, attention_backward_tensor(shape, A));
    const AttentionBackwardMatmuls mm = attention_backward_matmuls(shape, A);
    attn_mm(mm.grad_probs);  // dP = dC Vᵀ
    attn_mm(mm.grad_v);      // dV = Pᵀ dC, summed over each group
    count("attention", attention_softmax_backward_count(shape, A));
    r_.free({i, "attn.probs"});
    if (capped()) r_.free({i, "attn.tanh"});
    r_.free({i, "attn.v"});
    attn_mm(mm.grad_q);  // dQ = dS K
    r_.free({i, k_name});
    attn_mm(mm.grad_k);  // dK = dSᵀ Q, summed over each group
    r_.free({i, q_name});
    r_.free({i, "attn.grad_probs"});
  }
  r_.free({i, "attn.grad_ctx"});
  if (rope) {  // the rotation's backward on grad_q and grad_k, in place
    count("rope", rope_count(b.value(), t.value(), h.value(), shape.head_dim, A));
    count("rope", rope_count(b.value(), t.value(), shape.kv_heads, shape.head_dim, A));
  }
  if (qk_norm) {
    qk_norm_bwd(i, kQNorm, qw);
    qk_norm_bwd(i, kKNorm, kvw);
  }
  if (pre && !parallel) r_.alloc({i, "attn_norm.grad_out"}, Category::temporary, n * d);
  lin_bwd(d_, qw_, parallel || !pre, F32, "linear", w.bq >= 0);  // post only: into the residual stream's gradient
  release_weight(w.wq);
  release_bias(w.bq);
  r_.free({i, grad_q_name});
  lin_bwd(d_, kvw_, true, F32, "linear", w.bk >= 0);
  release_weight(w.wk);
  release_bias(w.bk);
  r_.free({i, grad_k_name});
  lin_bwd(d_, kvw_, true, F32, "linear", w.bv >= 0);
  // q, k, v linears' saved input (post only in float32: the layer input itself, unless recompute keeps it too)
  r_.free(attn_input != nullptr ? TensorName{i, attn_input} : layer_input(i));
  release_weight(w.wv);
  release_bias(w.bv);
  r_.free({i, "attn.grad_v"});
  if (pre) norm_bwd(i, kAttnNorm, true);
}

void StepReplay::backward() {
  r_.set_phase(Phase::backward);
  const int head_unit = layout.head_unit();
  create_grads(head_unit);
  if (c_.tie_embeddings) create_grads(0);
  gather_head();
  count("cross_entropy", cross_entropy_backward_count(n_, v_, A, logits_capped));
  if (logits_capped) r_.free(top("cross_entropy.lse"));
  r_.alloc(top("final_norm.grad_out"), Category::temporary, n * d);
  if (fsdp_tied_head()) cache_weight(layout.lm_head);
  lin_bwd(d_, v_, false, F32, "lm_head");
  r_.free(top("final_norm.out"));  // lm_head's saved input
  release_weight(layout.lm_head);
  r_.free(top("lm_head.logits"));  // the buffer that held probs, then dlogits
  r_.alloc(top("residual.grad"), Category::temporary, n * d);
  norm_bwd(kTop, kFinalNorm, false);
  const int32_t last = static_cast<int32_t>(c_.num_layers) - 1;
  r_.free({last, "ffn_residual"});  // final norm's saved input
  free_norm_stats(kTop, kFinalNorm);
  r_.free(top("final_norm.grad_out"));
  release_head();
  reduce_grads(head_unit);
  for (int32_t i = last; i >= 0; --i) {
    create_grads(i + 1);
    gather(i + 1);
    if (recompute_full) {
      r_.set_phase(Phase::recompute);
      block_forward(i);
      r_.free({i, "ffn_residual"});                                // the recomputed output is not needed
      if (attn_input != nullptr && !pre) r_.free(layer_input(i));  // held now by its cast alone
      r_.set_phase(Phase::backward);
    }
    ffn_backward(i);
    attention_backward(i);
    if (pre) {
      r_.free(layer_input(i));  // the attention norm's saved input
      free_norm_stats(i, kAttnNorm);
    }
    release(i + 1);
    reduce_grads(i + 1);
    if (pre) r_.free({i, "attn_norm.grad_out"});
  }
  if (rope) {
    r_.free(top("rope.cos"));
    r_.free(top("rope.sin"));
  }
  if (!c_.tie_embeddings) create_grads(0);
  if (layout.pos_emb >= 0) count("position_embedding", position_embedding_backward_count(b.value(), t.value(), d_, G));
  count("embedding", embedding_backward_count(n_, d_, G, c_.scale_embeddings));
  reduce_grads(0);
  r_.free(top("residual.grad"));
}

// Stages 0, 1 under mpirun: one tracked bucket at a time (optim/data_parallel.cpp), all-reduced (0) or
// reduce-scattered (1: this rank's part of the bucket arrives in "comm.shard").
void StepReplay::gradient_reduction() {
  if (ranks == 1 || stage >= 2) return;
  r_.set_phase(Phase::communication);
  int64_t bucket_start = 0;
  int32_t k = 0;
  for (int64_t elements : gradient_buckets(c_, c_.bucket_bytes())) {
    const TensorName bucket{kTop, "comm.bucket", {}, k++};
    r_.alloc(bucket, Category::temporary, elements);
    if (stage == 0) collective("all_reduce", 4 * CheckedInt(elements), 4 * CheckedInt(elements));
    const int64_t part = stage == 1 ? owned_count(bucket_start, elements, num_parameters.value(), rank, ranks) : 0;
    if (stage == 1) collective("reduce_scatter", 4 * CheckedInt(elements), 4 * CheckedInt(part));
    if (part > 0) {
      r_.alloc(top("comm.shard"), Category::temporary, part);
      r_.free(top("comm.shard"));
    }
    r_.free(bucket);
    bucket_start += elements;
  }
}

// AdamW over every parameter, or (ZeRO) over this rank's flat range; it allocates nothing in steady state. Stages
// 1 and 2 then all-gather every parameter in place.
void StepReplay::optimizer_step() {
  r_.set_phase(Phase::optimizer);
  if (out_.counts == nullptr) return;
  const AdamWConfig optim = out_.optim != nullptr ? *out_.optim : AdamWConfig{};
  CheckedInt updated = num_parameters;
  if (stage >= 1) {
    const auto [lo, hi] = owned_range(num_parameters.value(), rank, ranks);
    updated = hi - lo;
  }
  count("adamw",
        plan.master_weights ? adamw_master_count(updated.value(), optim, G) : adamw_count(updated.value(), optim));
  if (ranks == 1 || stage == 0 || stage == 3) return;
  for (size_t i = 0; i < params.size(); ++i) {
    collective("all_gather", CheckedInt(dtype_bytes(P)) * mine[i], params[i].elements * dtype_bytes(P));
  }
}

}  // namespace

MemoryEstimate replay_step(const ModelConfig& config, const MemoryEstimateOptions& options, const ReplayOutputs& out) {
  return StepReplay(config, options, out).run();
}

}  // namespace reckon
