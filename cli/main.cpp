// reckon: where does every byte and every FLOP of a training step go?
#include <algorithm>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "cli/estimate.h"
#include "cli/extrapolate.h"
#include "cli/html_report.h"
#include "runtime/comm.h"
#include "cli/memory_guard.h"
#include "cli/reconcile.h"
#include "cli/train.h"
#include "cli/validate.h"
#include "model/config.h"
#include "runtime/allocator.h"
#include "runtime/checked.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {
namespace {

// The runtime on its own: one linear layer's forward and backward matmuls, with every byte and FLOP shown.
int run_demo(int64_t m, int64_t in, int64_t out, const std::string& max_memory) {
  // W, dW (out·in); x, dX (m·in); y, dY (m·out): float32, each rounded up to 64 B.
  const CheckedInt bytes = 2 * (CheckedInt(aligned_size(4 * out * in)) + aligned_size(4 * m * in) +
                                aligned_size(4 * m * out));
  check_bytes_fit("demo", bytes.value(), memory_budget(max_memory));
  Tensor w = Tensor::empty({out, in}, Category::parameter, "demo.linear.weight");
  Tensor grad_w = Tensor::zeros({out, in}, Category::gradient, "demo.linear.weight.grad");
  w.fill(0.01f);
  Tensor x = Tensor::empty({m, in}, Category::activation, "demo.input");
  x.fill(1.0f);
  Tensor y = Tensor::empty({m, out}, Category::activation, "demo.linear.out");
  {
    PhaseScope phase(Phase::forward);
    matmul(y, x, w.transpose(0, 1), "linear");  // y = x·Wᵀ
  }
  {
    PhaseScope phase(Phase::backward);
    Tensor grad_y = Tensor::empty({m, out}, Category::temporary, "demo.linear.out.grad");
    grad_y.fill(1.0f);
    Tensor grad_x = Tensor::empty({m, in}, Category::temporary, "demo.input.grad");
    matmul(grad_x, grad_y, w, "linear");                              // dX = dY·W
    matmul(grad_w, grad_y.transpose(0, 1), x, "linear", 1.0f, true);  // dW += dYᵀ·X
  }
  fmt::print("\n## Memory by category (tracking allocator)\n\n{}\n", memory_table(tracker().stats()));
  fmt::print("## Tensors live at the peak\n\n{}\n", live_at_peak_table(tracker(), 10));
  fmt::print("## FLOPs and bytes per op x phase\n\n{}", counters_table(counters()));
  return 0;
}

// --preset, --config, --set: how train, reconcile and estimate pick a config (same flags, same meaning).
void add_config_options(CLI::App* app, std::string& preset, std::string& config_file,
                        std::vector<std::string>& overrides, const std::string& preset_help) {
  app->add_option("--preset", preset, preset_help);
  app->add_option("--config", config_file, "TOML config file (keys as --set; may name a preset)");
  app->add_option("--set", overrides, "override a config field: key=value (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

// The subcommand a command line names: the first argument that is not an option (skipping the value of the
// global --threads). "" if there is none.
std::string named_subcommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--threads") {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] == '-') continue;
    return std::string(a);
  }
  return "";
}

// The option named `name` ("--steps") of subcommand `sub` or of the app (global options), or nullptr.
const CLI::Option* find_option(const CLI::App& app, const std::string& sub, const std::string& name) {
  for (const CLI::App* s : app.get_subcommands({})) {
    if (s->get_name() != sub) continue;
    if (const CLI::Option* opt = s->get_option_no_throw(name)) return opt;
  }
  return app.get_option_no_throw(name);
}

// An option given with an empty value (`--json ''`, `--set ''`): refused, naming the option, rather than read as
// "not given".
void refuse_empty_values(const CLI::App& app) {
  for (const CLI::App* sub : app.get_subcommands()) {
    for (const CLI::Option* opt : sub->get_options()) {
      if (opt->count() == 0 || opt->get_type_size() == 0) continue;  // not given, or a flag
      for (const std::string& value : opt->results()) {
        if (value.empty()) {
          throw std::invalid_argument(fmt::format("{}: an empty value is not allowed", opt->get_name()));
        }
      }
    }
  }
}

}  // namespace
}  // namespace reckon

namespace {
int run_main(int argc, char** argv);
}  // namespace

int main(int argc, char** argv) {
  // Under mpirun every rank joins MPI here (runtime/comm.h); alone, nothing happens. Ranks other than 0 print
  // nothing on stdout and write no file (rank 0 reports); errors still reach stderr.
  reckon::comm_init(&argc, &argv);
  const int rc = run_main(argc, argv);
  // A rank that fails while the others may be inside a collective must not wait in MPI_Finalize for them (that
  // deadlocks): it exits without finalizing, and mpirun ends the job.
  if (rc != 0 && reckon::comm_size() > 1) reckon::comm_abort(rc);
  reckon::comm_finalize();
  return rc;
}

namespace {
int run_main(int argc, char** argv) {
  if (reckon::comm_rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  CLI::App app{"reckon: where does every byte and every FLOP of a training step go?"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads) may follow the subcommand
  // A flag given twice: the last one wins, as in most command-line tools (--set accumulates).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  int threads = 0;
  app.add_option("--threads", threads, "OpenMP threads [1, 1024] (default: OMP_NUM_THREADS or all cores)")
      ->check(CLI::Range(1, 1024));

  int64_t m = 2048, in = 512, out = 2048;
  CLI::App* demo = app.add_subcommand("demo", "Exercise the runtime: a linear layer's matmuls, then the tables");
  demo->add_option("--rows", m, "rows of the input (B*T) [1, 1048576]")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  demo->add_option("--in", in, "input features [1, 65536]")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  demo->add_option("--out", out, "output features [1, 65536]")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  std::string demo_max_memory;
  demo->add_option("--max-memory", demo_max_memory, "memory budget (default: available RAM; at most physical RAM)");

  const std::string preset_list = fmt::format("{}", fmt::join(reckon::preset_names(), ", "));
  reckon::TrainOptions train_opts;
  CLI::App* train = app.add_subcommand("train", "Train a scaled-down transformer LM and show where every byte and FLOP went");
  reckon::add_config_options(train, train_opts.preset, train_opts.config_file, train_opts.overrides,
                             preset_list);
  train->add_option("--steps", train_opts.steps, "training steps [1, 10000000]");
  train->add_option("--data", train_opts.data, "a text file (byte-level tokens) or 'random'");
  train->add_option("--json", train_opts.json_path, "write every table as JSON here (atomically)");
  train->add_option("--trace", train_opts.trace_path, "write a Chrome/Perfetto trace (op slices, memory counters)");
  train->add_option("--max-memory", train_opts.max_memory,
                    "memory budget, e.g. 8GB or 8GiB (default: available RAM; at most physical RAM)");
  train->add_option("--peak-gflops", train_opts.peak_gflops, "peak GFLOP/s for utilisation, (0, 1e9] (default: measured FMA peak)")
      ->check(CLI::PositiveNumber);
  train->add_flag("--quiet", train_opts.quiet, "no per-step progress lines");
  train->add_flag("--profile", train_opts.profile, "per-op profile: time share, GFLOP/s, GB/s, % of this CPU's roofline");
  train->add_option("--save", train_opts.save_path,
                    "write a checkpoint after the last step: parameters, AdamW state, step, config (safetensors)");
  train->add_option("--resume", train_opts.resume_path,
                    "continue from a checkpoint (its config and data) for --steps more steps");
  train->add_option("--zero", train_opts.zero_stage,
                    "data-parallel stage under mpirun (config field zero_stage): 0 = DDP, 1 = + AdamW state sharded, 2 = + gradients, 3 = + parameters");
  train->add_option("--report", train_opts.report_path,
                    "write an HTML report: memory over one steady step, time per op, roofline, reconciliation");
  train->add_option("--plot-memory", train_opts.plot_memory_path, "write the memory-over-time picture alone (SVG)");
  train->add_option("--dump-grads", train_opts.dump_grads_path,
                    "write the last step's gradients under the parameters' names (safetensors)");

  reckon::ReconcileOptions rec_opts;
  CLI::App* reconcile = app.add_subcommand(
      "reconcile", "Run real steps, then measured vs analytic bytes and FLOPs; exit 0 only if every difference is 0");
  reckon::add_config_options(reconcile, rec_opts.preset, rec_opts.config_file, rec_opts.overrides,
                             preset_list);
  reconcile->add_flag("--sweep", rec_opts.sweep,
                      "512 configs: 64 shapes (both ffn kinds, tied/untied, positions, odd sizes) x 4 precisions x "
                      "naive/flash attention");
  reconcile->add_option("--json", rec_opts.json_path, "write measured and analytic numbers as JSON");
  reconcile->add_flag("--quiet", rec_opts.quiet, "with --sweep: print only configs that differ");
  reconcile->add_option("--zero", rec_opts.zero_stage, "data-parallel stage under mpirun (config field zero_stage, 0 to 3)");
  reconcile->add_option("--max-memory", rec_opts.max_memory, "memory budget per measured step (default: available RAM)");

  reckon::EstimateOptions est;
  CLI::App* estimate = app.add_subcommand("estimate", "Answer the accounting questions from the config alone (instant)");
  reckon::add_config_options(estimate, est.preset, est.config_file, est.overrides,
                             preset_list + " (default gpt2-xl)");
  estimate->add_option("--batch-size", est.batch_size, "batch size for memory and FLOPs [1, 65536]")
      ->check(CLI::Range(int64_t{1}, reckon::kMaxEstimateBatch));
  estimate->add_option("--memory-budget", est.memory_budget, "e.g. 80GB (10^9) or 80GiB (2^30)");
  estimate->add_option("--gpu", est.gpu, "a100-40gb, a100-80gb, h100-sxm");
  estimate->add_option("--precision", est.precision,
                       "training precision: fp32, tf32 (fp32 at the TF32 peak), amp-bf16, bf16 (default: the config's); "
                       "the GPU peak follows it");
  estimate->add_option("--mfu", est.mfu, "model FLOP utilisation [1e-6, 1]");
  estimate->add_option("--train-steps", est.train_steps, "training steps [1, 2^40]; steps x batch x T must fit int64");
  estimate->add_option("--train-batch", est.train_batch, "sequences per training step [1, 2^24]");
  estimate->add_option("--activations", est.activations, "implemented (default) or textbook");
  estimate->add_option("--json", est.json_path, "write the answers as JSON");
  estimate->add_option("--gpus", est.cluster.gpus,
                       "data-parallel GPUs [1, 65536]: per-GPU memory, max batch, communication and days for ZeRO stages 0-3");
  estimate->add_option("--zero", est.zero_stage, "the config's ZeRO stage (config field zero_stage, 0 to 3; bold in the --gpus table)");
  estimate->add_option("--link", est.cluster.link, "with --gpus: auto (NVLink up to 8 GPUs, else InfiniBand), nvlink, infiniband");
  estimate->add_option("--link-gbps", est.cluster.link_gbps, "with --gpus: link bandwidth, GB/s per direction per GPU");
  estimate->add_option("--link-latency-us", est.cluster.link_latency_us, "with --gpus: α per ring step, µs");

  reckon::ExtrapolateOptions ext;
  CLI::App* extrapolate = app.add_subcommand(
      "extrapolate", "Validate the counts and the roofline on measured S and M steps, then apply them to a target");
  extrapolate->add_option("--validate", ext.validate, "presets to measure here (default: S M)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  extrapolate->add_option("--steps", ext.steps, "timed steps per preset (median) [1, 1000]");
  extrapolate->add_option("--target", ext.target, "preset to extrapolate to (default gpt2-xl)");
  extrapolate->add_option("--target-batch", ext.target_batch, "batch size of one target step [1, 1048576]");
  extrapolate->add_option("--gpu", ext.gpu, "a100-40gb, a100-80gb, h100-sxm");
  extrapolate->add_option("--precision", ext.precision,
                          "training precision: fp32, tf32 (default: fp32 at the TF32 peak), amp-bf16, bf16; the GPU "
                          "peak follows it");
  extrapolate->add_option("--set", ext.overrides, "key=value applied to the measured presets and the target "
                          "(e.g. attention=flash, recompute=full); repeatable");
  extrapolate->add_option("--train-steps", ext.train_steps, "training steps [1, 2^40]");
  extrapolate->add_option("--train-batch", ext.train_batch, "sequences per training step [1, 2^24]");
  extrapolate->add_option("--json", ext.json_path, "write the results as JSON");
  extrapolate->add_option("--max-memory", ext.max_memory, "memory budget per measured step (default: available RAM)");

  std::string report_in, report_out;
  CLI::App* report = app.add_subcommand("report", "Render the HTML report of a saved `reckon train --json` file");
  report->add_option("json", report_in, "the JSON written by reckon train --json")->required();
  report->add_option("-o,--output", report_out, "the HTML file to write")->required();

  const std::vector<std::string> subcommands = {"demo", "train", "reconcile", "estimate", "extrapolate", "report"};
  const std::string named = reckon::named_subcommand(argc, argv);
  const bool help = std::any_of(argv + 1, argv + argc, [](const char* a) {
    return std::string_view(a) == "--help" || std::string_view(a) == "-h";
  });
  if (!help && std::find(subcommands.begin(), subcommands.end(), named) == subcommands.end()) {
    fmt::print(stderr, "reckon: error: {}; valid subcommands: {} (reckon --help lists them)\n",
               named.empty() ? std::string("a subcommand is required") : fmt::format("unknown subcommand '{}'", named),
               fmt::join(subcommands, ", "));
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ConversionError& e) {
    // "Could not convert: --steps = abc": say what the option accepts (its help text states the range).
    const std::string what = e.what();
    const std::string prefix = "Could not convert: ";
    const size_t eq = what.find(" = ");
    if (what.rfind(prefix, 0) == 0 && eq != std::string::npos) {
      const std::string name = what.substr(prefix.size(), eq - prefix.size());
      const CLI::Option* opt = reckon::find_option(app, named, name);
      fmt::print(stderr, "reckon: error: {}: '{}' is not a valid value{}\n", name, what.substr(eq + 3),
                 opt != nullptr ? "; allowed: " + opt->get_description() : std::string());
      return 2;
    }
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const CLI::ParseError& e) {
    // --help prints and succeeds; any bad flag or value exits 2, like every other input error.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    reckon::refuse_empty_values(app);
    if (threads > 0) reckon::set_num_threads(threads);
    fmt::print("{} | fmt {}.{}.{} CLI11 {} nlohmann_json {}.{}.{}\n", reckon::machine_summary(reckon::machine_info()),
               FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100, CLI11_VERSION,
               NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH);
    if (*demo) return reckon::run_demo(m, in, out, demo_max_memory);
    if (*train) {
      train_opts.config_given = train->count("--preset") + train->count("--config") + train->count("--set") > 0;
      train_opts.data_given = train->count("--data") > 0;
      train_opts.zero_given = train->count("--zero") > 0;
      return reckon::run_train(train_opts);
    }
    if (*reconcile) {
      rec_opts.zero_given = reconcile->count("--zero") > 0;
      return reckon::run_reconcile(rec_opts);
    }
    if (*report) return reckon::run_report(report_in, report_out);
    if (*estimate) {
      est.cluster.gpus_given = estimate->count("--gpus") > 0;
      est.cluster.link_gbps_given = estimate->count("--link-gbps") > 0;
      est.cluster.link_latency_given = estimate->count("--link-latency-us") > 0;
      est.zero_given = estimate->count("--zero") > 0;
      return reckon::run_estimate(est);
    }
    if (*extrapolate) return reckon::run_extrapolate(ext);
  } catch (const std::exception& e) {
    const reckon::ErrorExit exit = reckon::error_exit(e);
    fmt::print(stderr, "{}\n", exit.message);
    return exit.code;
  }
  return 0;
}
}  // namespace
