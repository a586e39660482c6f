#include "estimators/gpu_step.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "estimators/memory.h"
#include "model/layout.h"

namespace reckon {

namespace {

// Sources (../shared/research/gpu_time.md, docs/conventions.md):
//   η_gemm: "Maximum Achievable Matmul FLOPS", bf16, a brute-force search over shapes with torch.matmul
//     (stas00/ml-engineering compute/accelerator/README.md): A100 SXM 271.2 of 312 (86.9%), H100 SXM 794.5 of 989
//     (80.3%; "H200 is the same"), B200 1745 of 2250 (77.6%), MI300X 668.4 of 1307 (51.4%, ROCm 6.3 TunableOp).
//   η_hbm: a streaming kernel on A100 80GB, 1.80 of 2.04 TB/s (NVIDIA developer forum t/339083, ncu agrees): 0.88;
//     H100 STREAM triad 3.09 of 3.35 (a third-party log; GH200 3.64 of 4.0 = 0.91 agrees): 0.90. No published
//     figure for H200 (H100's taken), B200 and MI300X (A100's 0.88 taken).
//   NCCL ring bus bandwidth ÷ link peak: 8×A100 all-reduce ~230 of 300 GB/s (nccl-tests#149): 0.767; 8×H100 ring
//     collectives ~370 of 450 (nccl-tests#212, #326): 0.822 (H200: the same NVLink 4, taken); 8×B200 all-reduce
//     724 of 900 GB/s at 1 GiB (ml-engineering network/README.md): 0.80; MI300X: no figure, A100's taken. Across
//     nodes: 4×8 B200 over 8×50 GB/s EFA, ≈37 GB/s per NIC (same source): 0.74, for every GPU.
//   Attention: FlashAttention-2 on A100 80GB (Dao 2023, arXiv 2307.08691, Figs. 4–6; kFlashA100 below). On H100
//     (same paper, Fig. 7, fwd+bwd, head dim 128, causal) 163 TFLOP/s at T = 512 and 328 at 16k against A100's 99
//     and 189: ×1.646 and ×1.735, mean 1.69 (H200: the same SMs and clocks, taken). B200 and MI300X: no published
//     FlashAttention-2 figure; assumed to keep H100's rate relative to the achievable matmul rate (peak × η_gemm).
constexpr double kH100AttentionScale = (163.0 / 99.0 + 328.0 / 189.0) / 2;

double attention_scale_like_h100(double bf16_tflops, double gemm_efficiency) {
  return kH100AttentionScale * (bf16_tflops * gemm_efficiency) / (989.4 * 0.803);
}

// FlashAttention-2, A100 80GB SXM4, TFLOP/s in its FLOP convention, by [pass][causal][head dim 64, 128][T].
constexpr std::array<int64_t, 6> kFlashSeq = {512, 1024, 2048, 4096, 8192, 16384};
constexpr double kFlashA100[2][2][2][6] = {
    {{{128, 149, 193, 192, 192, 192}, {122, 157, 200, 224, 222, 225}},   // forward, non-causal
     {{115, 131, 167, 177, 181, 185}, {108, 126, 133, 148, 148, 148}}},  // forward, causal
    {{{120, 152, 163, 169, 170, 170}, {114, 175, 187, 193, 196, 196}},   // backward, non-causal
     {{81, 111, 149, 160, 166, 166}, {90, 122, 145, 165, 175, 186}}}};   // backward, causal

// Linear in log T between the table's points, clamped at its ends.
double flash_a100_tflops(bool backward, bool causal, int hd, int64_t t) {
  const double* row = kFlashA100[backward][causal][hd];
  const double x = std::log2(static_cast<double>(std::clamp<int64_t>(t, kFlashSeq.front(), kFlashSeq.back())));
  const double x0 = std::log2(static_cast<double>(kFlashSeq.front()));
  const double pos = x - x0;  // the table steps by doublings
  const int i = std::min(static_cast<int>(pos), 4);
  const double f = pos - i;
  return row[i] * (1 - f) + row[i + 1] * f;
}

// The 1 − 2^… size factor of a memory-bound transfer (Calculon's systems/a100_80g.json memory efficiency, relative
// to its ≥ 100 MB value 0.90).
double size_factor(double bytes) {
  if (bytes >= 100e6) return 1.0;
  if (bytes >= 10e6) return 0.75 / 0.90;
  if (bytes >= 1e6) return 0.60 / 0.90;
  return 0.30 / 0.90;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

double operand_bytes(const MatmulGeometry& g) {
  const double b = static_cast<double>(g.batch()), m = static_cast<double>(g.m()), n = static_cast<double>(g.n()),
               k = static_cast<double>(g.k());
  return b * (m * k * dtype_bytes(g.a_dtype) + k * n * dtype_bytes(g.b_dtype) +
              m * n * dtype_bytes(g.dst_dtype) * (g.accumulate ? 2 : 1)) +
         (g.bias ? n * dtype_bytes(g.bias_dtype) : 0.0);
}

// Query-key pairs a causal attention of T positions attends per head in `layer` (its window, if any).
double causal_pairs(const ModelConfig& m, int64_t layer) {
  const double t = static_cast<double>(m.context_length);
  const int64_t w = m.layer_window(layer);
  if (w <= 0 || w >= m.context_length) return t * (t + 1) / 2;
  const double wd = static_cast<double>(w);
  return wd * (wd + 1) / 2 + (t - wd) * wd;  // rows 0 … W−1 see i + 1 keys, the rest W
}

}  // namespace

const GpuKernels& gpu_kernels(const GpuSpec& gpu) {
  static const GpuKernels a100{0.869, 0.88, 0.767, 0.74, 1.0, "A100: every constant measured on A100"};
  static const GpuKernels h100{
      0.803, 0.90, 0.822, 0.74, kH100AttentionScale, "H100: GEMM, HBM, NCCL and FlashAttention-2 measured on H100"};
  static const GpuKernels h200{0.803,
                               0.90,
                               0.822,
                               0.74,
                               kH100AttentionScale,
                               "H200: H100's (the same SMs, clocks and NVLink; MAMF says the same)"};
  static const GpuKernels b200{0.776,
                               0.88,
                               0.80,
                               0.74,
                               attention_scale_like_h100(2250, 0.776),
                               "B200: GEMM and NCCL measured; HBM A100's, attention H100's relative to GEMM"};
  static const GpuKernels mi300x{0.514,
                                 0.88,
                                 0.767,
                                 0.74,
                                 attention_scale_like_h100(1307.4, 0.514),
                                 "MI300X: GEMM measured; HBM and links A100's, attention H100's relative to GEMM"};
  if (gpu.name.starts_with("a100")) return a100;
  if (gpu.name == "h100-sxm") return h100;
  if (gpu.name == "h200") return h200;
  if (gpu.name == "b200") return b200;
  if (gpu.name == "mi300x") return mi300x;
  throw std::invalid_argument(fmt::format("--gpu: no kernel constants for '{}'", gpu.name));
}

GemmTime gemm_time(int64_t batch, int64_t m, int64_t n, int64_t k, double operand_bytes_total, const GpuSpec& gpu,
                   double peak_flops) {
  const GpuKernels& kern = gpu_kernels(gpu);
  const double per_sm = peak_flops * kern.gemm_efficiency / static_cast<double>(gpu.sms);
  GemmTime best;
  for (const auto& [tm, tn] : {std::pair<int64_t, int64_t>{256, 128}, {128, 256}, {128, 128}}) {
    const int64_t ctas = batch * ceil_div(m, tm) * ceil_div(n, tn);
    const int64_t waves = ceil_div(ctas, gpu.sms);
    const double seconds =
        static_cast<double>(waves) * 2.0 * static_cast<double>(tm * tn) * static_cast<double>(k) / per_sm;
    if (best.ctas == 0 || seconds < best.seconds) best = {seconds, tm, tn, ctas, waves, false};
  }
  const double memory = operand_bytes_total / (gpu.hbm_tbps * 1e12 * kern.hbm_efficiency);
  if (memory > best.seconds) best.seconds = memory, best.memory_bound = true;
  return best;
}

double memory_bound_seconds(double bytes, double flops, const GpuSpec& gpu, int64_t kernels) {
  const double per_kernel = bytes / static_cast<double>(std::max<int64_t>(1, kernels));
  const double memory = bytes / (gpu.hbm_tbps * 1e12 * gpu_kernels(gpu).hbm_efficiency * size_factor(per_kernel));
  return std::max(memory, flops / (gpu.fp32_tflops * 1e12));
}

double flash_attention_rate(const GpuSpec& gpu, bool backward, bool causal, int64_t head_dim, int64_t seq_len) {
  const double lo = flash_a100_tflops(backward, causal, 0, seq_len),
               hi = flash_a100_tflops(backward, causal, 1, seq_len);
  const double f = std::clamp((static_cast<double>(head_dim) - 64.0) / 64.0, 0.0, 1.0);
  return (lo * (1 - f) + hi * f) * 1e12 * gpu_kernels(gpu).attention_scale;
}

double exposed_communication(const std::vector<double>& comm, const std::vector<double>& compute) {
  if (comm.empty()) return 0;
  double exposed = comm[0];
  for (size_t u = 1; u < comm.size(); ++u) exposed += std::max(0.0, comm[u] - compute[u - 1]);
  return exposed;
}

namespace {

// The op's time from its counts and matmul calls: GEMMs at their shapes, the rest of its bytes memory-bound,
// flash attention at FlashAttention-2's rate; every kernel at least the launch time.
GpuOpTime op_time(const OpKey& key, const OpCount& c, const std::vector<StepMatmul>& matmuls, const ModelConfig& m,
                  const GpuSpec& gpu, double peak) {
  GpuOpTime row{
      key, 0, "memory", static_cast<double>(c.flops()), static_cast<double>(c.bytes_read + c.bytes_written), c.calls};
  const bool flash_gpu = key.op == "attention" && m.attention == AttentionKind::flash && m.precision != Precision::fp32;
  if (flash_gpu) {  // FlashAttention's FLOPs: 4·d·B·H·pairs forward, 2.5× backward
    const bool backward = key.phase == Phase::backward;
    for (int64_t l = 0; l < m.num_layers; ++l) {
      const double fa_flops = 4.0 *
                              static_cast<double>(m.head_size() * m.batch_size * m.micro_batches() * m.num_heads) *
                              causal_pairs(m, l) * (backward ? 2.5 : 1.0);
      row.seconds += fa_flops / flash_attention_rate(gpu, backward, true, m.head_size(), m.context_length);
    }
    row.bound = "compute";
  } else {
    double gemm = 0, gemm_bytes = 0, gemm_flops = 0;
    bool gemm_compute = false;
    for (const StepMatmul& mm : matmuls) {
      if (mm.key.op != key.op || mm.key.phase != key.phase) continue;
      const MatmulGeometry& g = mm.geometry;
      const double bytes = operand_bytes(g);
      const GemmTime t = gemm_time(g.batch(), g.m(), g.n(), g.k(), bytes, gpu, peak);
      gemm += t.seconds * static_cast<double>(mm.calls);
      gemm_bytes += bytes * static_cast<double>(mm.calls);
      gemm_flops += 2.0 * static_cast<double>(g.batch()) * static_cast<double>(g.m()) * static_cast<double>(g.n()) *
                    static_cast<double>(g.k()) * static_cast<double>(mm.calls);
      gemm_compute |= !t.memory_bound;
    }
    // Matmul work inside the op's own kernel (flash attention where FlashAttention-2 does not run: fp32) at the
    // best-shape rate.
    const double unlisted = std::max(0.0, static_cast<double>(c.matmul_flops) - gemm_flops);
    if (unlisted > 0) {
      gemm += unlisted / (peak * gpu_kernels(gpu).gemm_efficiency);
      gemm_compute = true;
    }
    const double rest_bytes = std::max(0.0, row.bytes - gemm_bytes);
    const double rest = rest_bytes > 0 || c.other_flops > 0
                            ? memory_bound_seconds(rest_bytes, static_cast<double>(c.other_flops), gpu, c.calls)
                            : 0.0;
    row.seconds = gemm + rest;
    row.bound = gemm > rest && gemm_compute ? "compute" : "memory";
  }
  const double launch = static_cast<double>(c.calls) * kLaunchSeconds;
  if (row.seconds < launch) row.seconds = launch, row.bound = "launch";
  return row;
}

// Each unit's share of the parameters (0 embeddings, 1 … L layers, L + 1 the head), for splitting a phase's
// collectives over the units they move.
std::vector<double> unit_parameter_shares(const ModelConfig& m) {
  const ParameterLayout layout = parameter_layout(m.shape());
  const std::vector<int64_t> sizes = layout.sizes();
  std::vector<double> shares;
  double total = 0;
  for (const auto& [first, last] : layout.units) {
    double n = 0;
    for (int i = first; i < last; ++i) n += static_cast<double>(sizes[static_cast<size_t>(i)]);
    shares.push_back(n);
    total += n;
  }
  for (double& s : shares) s = total > 0 ? s / total : 0;
  return shares;
}

// Each unit's compute in a phase: the embedding op in unit 0, lm_head and cross_entropy in the head, the rest
// evenly over the layers.
std::vector<double> unit_compute(const std::vector<GpuOpTime>& ops, Phase phase, int64_t layers) {
  std::vector<double> units(static_cast<size_t>(layers) + 2, 0.0);
  double rest = 0;
  for (const GpuOpTime& o : ops) {
    if (o.key.phase != phase) continue;
    if (o.key.op == "embedding")
      units.front() += o.seconds;
    else if (o.key.op == "lm_head" || o.key.op == "cross_entropy")
      units.back() += o.seconds;
    else
      rest += o.seconds;
  }
  for (int64_t l = 1; l <= layers; ++l) units[static_cast<size_t>(l)] = rest / static_cast<double>(layers);
  return units;
}

}  // namespace

GpuStep predict_gpu_step(const ModelConfig& m, const AdamWConfig& optim, const GpuSpec& gpu, int64_t ranks,
                         const Link& link, std::string_view gpu_math) {
  GpuStep s;
  s.gpu = gpu.name;
  s.peak_flops = gpu_peak_flops(gpu, gpu_math.empty() ? gpu_math_for(m.precision) : gpu_math);
  const std::map<OpKey, OpCount> counts = estimate_step_counts(m, optim, static_cast<int>(ranks), 0);
  const std::vector<StepMatmul> matmuls = step_matmuls(m);
  const GpuKernels& kern = gpu_kernels(gpu);
  Link effective = link;
  effective.bytes_per_second *= link.name == gpu.nvlink ? kern.nvlink_efficiency : kern.network_efficiency;
  std::map<std::string, double> comm;  // collective -> seconds
  for (const auto& [key, c] : counts) {
    if (key.phase == Phase::communication) {
      const double t = collective_time(key.op, collective_buffer_bytes(key.op, c), c.calls, ranks, effective).seconds;
      comm[key.op] += t;
      s.ops.push_back({key, t, "link", 0, static_cast<double>(c.bytes_read + c.bytes_written), c.calls});
      s.communication_seconds += t;
      continue;
    }
    s.ops.push_back(op_time(key, c, matmuls, m, gpu, s.peak_flops));
    s.compute_seconds += s.ops.back().seconds;
    s.roofline_seconds += std::max(static_cast<double>(c.matmul_flops) / s.peak_flops +
                                       static_cast<double>(c.other_flops) / (gpu.fp32_tflops * 1e12),
                                   static_cast<double>(c.bytes_read + c.bytes_written) / (gpu.hbm_tbps * 1e12));
  }
  // Overlap, per ZeRO stage. Gathers before use (stage 3) hide behind the previous unit's compute, in forward and
  // in backward (reverse order); gradient reductions (all stages) start after a unit's backward and hide behind
  // the next unit's; the post-step gathers of stages 1 and 2 have no compute beside them. With K micro-batches the
  // rule runs on one micro-batch's compute (the totals / K): stage 3's gathers and stages 2 and 3's reductions K
  // times, the reductions of stages 0 and 1 once, beside the last micro-batch's backward (DDP's no_sync).
  const double micro = static_cast<double>(m.micro_batches());
  const std::vector<double> share = unit_parameter_shares(m);
  auto micro_compute = [&](Phase phase) {
    std::vector<double> units = unit_compute(s.ops, phase, m.num_layers);
    for (double& u : units) u /= micro;
    return units;
  };
  const std::vector<double> fwd = micro_compute(Phase::forward);
  std::vector<double> bwd = micro_compute(Phase::backward);
  std::reverse(bwd.begin(), bwd.end());  // execution order: the head first
  std::vector<double> share_bwd(share.rbegin(), share.rend());
  auto per_unit = [](double total, const std::vector<double>& shares) {
    std::vector<double> out;
    for (double x : shares) out.push_back(total * x);
    return out;
  };
  const double reductions = comm["all_reduce"] + comm["reduce_scatter"];
  const double reduction_rounds = m.zero_stage >= 2 ? micro : 1;
  double exposed = 0;
  if (m.zero_stage == 3) {
    const double gathers = comm["all_gather"] / micro;  // forward once, backward once more (embeddings' share twice)
    exposed += micro * exposed_communication(per_unit(gathers / 2, share), fwd);
    exposed += micro * exposed_communication(per_unit(gathers / 2, share_bwd), bwd);
  } else {
    exposed += comm["all_gather"];
  }
  // Reductions, in backward's execution order r, k: unit i's hides behind unit i + 1's compute and the last one
  // is exposed whole — the prefetch rule on both lists reversed.
  std::vector<double> red = per_unit(reductions / reduction_rounds, share_bwd), k = bwd;
  std::reverse(red.begin(), red.end());
  std::reverse(k.begin(), k.end());
  exposed += reduction_rounds * exposed_communication(red, k);
  exposed += comm["broadcast"];
  s.exposed_communication_seconds = std::min(exposed, s.communication_seconds);
  s.seconds = s.compute_seconds + s.exposed_communication_seconds;
  const double tokens = static_cast<double>(m.batch_size * m.micro_batches() * m.context_length);
  s.tokens_per_second_per_gpu = tokens / s.seconds;
  const UtilizationFlops u = utilization_flops(m, optim);
  const double rate = s.seconds * s.peak_flops;
  s.mfu_causal = static_cast<double>(u.model_causal) / rate;
  s.mfu_full = static_cast<double>(u.model_full) / rate;
  s.hfu = static_cast<double>(u.hardware) / rate;
  return s;
}

}  // namespace reckon
