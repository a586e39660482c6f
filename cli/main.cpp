// reckon: where does every byte and every FLOP of a training step go?
#include <omp.h>

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

#include "cli/demo.h"
#include "cli/report.h"
#include "cli/estimate.h"
#include "cli/extrapolate.h"
#include "cli/html_report.h"
#include "runtime/comm.h"
#include "cli/memory_guard.h"
#include "cli/reconcile.h"
#include "cli/train.h"
#include "cli/validate.h"
#include "estimators/time.h"
#include "model/config.h"
#include "runtime/allocator.h"
#include "runtime/checked.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {
namespace {

// --preset, --config, --set: how train, reconcile and estimate pick a config (same flags, same meaning).
void add_config_options(CLI::App* app, std::string& preset, std::string& config_file, std::string& hf_config,
                        std::vector<std::string>& overrides, const std::string& preset_help) {
  app->add_option("--preset", preset, preset_help);
  app->add_option("--config", config_file, "TOML config file (keys as --set; may name a preset)");
  app->add_option("--hf-config", hf_config,
                  "a Hugging Face config.json (model_type llama, mistral, phi3, qwen2); --set applies after it");
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

// Every subcommand's options, filled by CLI11's parse.
struct Commands {
  int threads = 0;
  CLI::App *demo = nullptr, *train = nullptr, *reconcile = nullptr, *estimate = nullptr, *extrapolate = nullptr,
           *report = nullptr;
  int64_t demo_rows = 2048, demo_in = 512, demo_out = 2048;
  std::string demo_max_memory;
  reckon::TrainOptions train_opts;
  reckon::ReconcileOptions rec_opts;
  reckon::EstimateOptions est;
  reckon::ExtrapolateOptions ext;
  std::string report_in, report_out;
};

// The GPUs of the data-sheet table (estimators/time.h), as --gpu accepts them.
std::string gpu_names() {
  std::vector<std::string> names;
  for (const reckon::GpuSpec& g : reckon::gpu_specs()) names.push_back(g.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

void add_demo(CLI::App& app, Commands& c) {
  c.demo = app.add_subcommand("demo", "Exercise the runtime: a linear layer's matmuls, then the tables");
  c.demo->add_option("--rows", c.demo_rows, "rows of the input (B*T) [1, 1048576]")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  c.demo->add_option("--in", c.demo_in, "input features [1, 65536]")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  c.demo->add_option("--out", c.demo_out, "output features [1, 65536]")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  c.demo->add_option("--max-memory", c.demo_max_memory, "memory budget (default: available RAM; at most physical RAM)");
}

void add_train(CLI::App& app, Commands& c, const std::string& preset_list) {
  c.train = app.add_subcommand("train", "Train a scaled-down transformer LM and show where every byte and FLOP went");
  reckon::add_config_options(c.train, c.train_opts.preset, c.train_opts.config_file, c.train_opts.hf_config,
                             c.train_opts.overrides, preset_list);
  c.train->add_option("--steps", c.train_opts.steps, "training steps [1, 10000000]");
  c.train->add_option("--data", c.train_opts.data, "a text file (byte-level tokens) or 'random'");
  c.train->add_option("--json", c.train_opts.json_path, "write every table as JSON here (atomically)");
  c.train->add_option("--trace", c.train_opts.trace_path, "write a Chrome/Perfetto trace (op slices, memory counters)");
  c.train->add_option("--max-memory", c.train_opts.max_memory,
                      "memory budget, e.g. 8GB or 8GiB (default: available RAM; at most physical RAM)");
  c.train->add_option("--peak-gflops", c.train_opts.peak_gflops,
                      "peak GFLOP/s for utilisation, [0.001, 1e9] (default: measured FMA peak)");
  c.train->add_flag("--quiet", c.train_opts.quiet, "no per-step progress lines");
  c.train->add_flag("--profile", c.train_opts.profile,
                    "per-op profile: time share, GFLOP/s, GB/s, % of this CPU's roofline");
  c.train->add_option("--save", c.train_opts.save_path,
                      "write a checkpoint after the last step: parameters, AdamW state, step, config (safetensors)");
  c.train->add_option("--resume", c.train_opts.resume_path,
                      "continue from a checkpoint (its config and data) for --steps more steps");
  c.train
      ->add_option("--save-format", c.train_opts.save_format,
                   "reckon (default: parameters, AdamW state, step, config; resumable) or hf (the Hugging Face "
                   "state dict of a GPT-2 or LLaMA-family model: names and layouts transformers loads)")
      ->check(CLI::IsMember({"reckon", "hf"}));
  c.train->add_option("--init-from", c.train_opts.init_from_path,
                      "start from the weights of a checkpoint (reckon's or a Hugging Face safetensors state dict of "
                      "the same architecture) with this run's config and a fresh optimizer");
  c.train->add_option("--zero", c.train_opts.zero_stage,
                      "data-parallel stage under mpirun (config field zero_stage): 0 = DDP, 1 = + AdamW state sharded, "
                      "2 = + gradients, 3 = + parameters");
  c.train->add_option("--report", c.train_opts.report_path,
                      "write an HTML report: memory over one steady step, time per op, roofline, reconciliation");
  c.train->add_option("--plot-memory", c.train_opts.plot_memory_path, "write the memory-over-time picture alone (SVG)");
  c.train->add_option("--dump-grads", c.train_opts.dump_grads_path,
                      "write the last step's gradients under the parameters' names (safetensors)");
}

void add_reconcile(CLI::App& app, Commands& c, const std::string& preset_list) {
  c.reconcile = app.add_subcommand(
      "reconcile", "Run real steps, then measured vs analytic bytes and FLOPs; exit 0 only if every difference is 0");
  reckon::add_config_options(c.reconcile, c.rec_opts.preset, c.rec_opts.config_file, c.rec_opts.hf_config,
                             c.rec_opts.overrides, preset_list);
  c.reconcile->add_flag(
      "--sweep", c.rec_opts.sweep,
      "2784 configs: 116 models (both ffn kinds, tied/untied, 3 positions, GQA/MQA, head_dim, windows, soft-capping, "
      "odd sizes) x 4 "
      "precisions x "
      "naive/flash attention x 3 recomputes (every 7th with 2 micro-batches a step), each exact event by event");
  c.reconcile->add_option("--json", c.rec_opts.json_path, "write measured and analytic numbers as JSON");
  c.reconcile->add_flag("--quiet", c.rec_opts.quiet, "with --sweep: print only configs that differ");
  c.reconcile->add_option("--zero", c.rec_opts.zero_stage,
                          "data-parallel stage under mpirun (config field zero_stage, 0 to 3)");
  c.reconcile->add_option("--max-memory", c.rec_opts.max_memory,
                          "memory budget per measured step (default: available RAM)");
}

void add_estimate(CLI::App& app, Commands& c, const std::string& preset_list) {
  c.estimate = app.add_subcommand("estimate", "Answer the accounting questions from the config alone (instant)");
  reckon::add_config_options(c.estimate, c.est.preset, c.est.config_file, c.est.hf_config, c.est.overrides,
                             preset_list + " (default gpt2-xl)");
  c.estimate->add_option("--batch-size", c.est.batch_size, "batch size for memory and FLOPs [1, 65536]")
      ->check(CLI::Range(int64_t{1}, reckon::kMaxEstimateBatch));
  c.estimate->add_option("--memory-budget", c.est.memory_budget, "e.g. 80GB (10^9) or 80GiB (2^30)");
  c.estimate->add_option("--gpu", c.est.gpu, gpu_names());
  c.estimate->add_option(
      "--precision", c.est.precision,
      "training precision: fp32, tf32 (fp32 at the TF32 peak), amp-bf16, bf16 (default: the config's); "
      "the GPU peak follows it");
  c.estimate->add_option("--mfu", c.est.mfu, "model FLOP utilisation [1e-6, 1]");
  c.estimate->add_option("--train-steps", c.est.train_steps,
                         "training steps [1, 2^40]; steps x batch x T must fit int64");
  c.estimate->add_option("--train-batch", c.est.train_batch, "sequences per training step [1, 2^24]");
  c.estimate->add_option("--activations", c.est.activations, "implemented (default) or textbook");
  c.estimate->add_option("--json", c.est.json_path, "write the answers as JSON");
  c.estimate->add_option(
      "--gpus", c.est.cluster.gpus,
      "data-parallel GPUs [1, 65536]: per-GPU memory, max batch, communication and days for ZeRO stages 0-3");
  c.estimate->add_option("--zero", c.est.zero_stage,
                         "the config's ZeRO stage (config field zero_stage, 0 to 3; bold in the --gpus table)");
  c.estimate->add_option("--link", c.est.cluster.link,
                         "with --gpus: auto (NVLink up to 8 GPUs, else InfiniBand), nvlink, infiniband");
  c.estimate->add_option("--link-gbps", c.est.cluster.link_gbps,
                         "with --gpus: link bandwidth, GB/s per direction per GPU");
  c.estimate->add_option("--link-latency-us", c.est.cluster.link_latency_us, "with --gpus: α per ring step, µs");
}

void add_extrapolate_and_report(CLI::App& app, Commands& c) {
  c.extrapolate = app.add_subcommand(
      "extrapolate", "Validate the counts and the roofline on measured S and M steps, then apply them to a target");
  c.extrapolate->add_option("--validate", c.ext.validate, "presets to measure here (default: S M)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c.extrapolate->add_option("--steps", c.ext.steps, "timed steps per preset (median) [1, 1000]");
  c.extrapolate->add_option("--target", c.ext.target, "preset to extrapolate to (default gpt2-xl)");
  c.extrapolate->add_option("--hf-config", c.ext.target_hf_config,
                            "the target from a Hugging Face config.json instead of --target (--set applies after it)");
  c.extrapolate->add_option("--target-batch", c.ext.target_batch, "batch size of one target step [1, 65536]");
  c.extrapolate->add_option("--gpu", c.ext.gpu, gpu_names());
  c.extrapolate->add_option("--precision", c.ext.precision,
                            "training precision: fp32, tf32 (default: fp32 at the TF32 peak), amp-bf16, bf16; the GPU "
                            "peak follows it");
  c.extrapolate->add_option("--set", c.ext.overrides,
                            "key=value applied to the measured presets and the target "
                            "(e.g. attention=flash, recompute=full); repeatable");
  c.extrapolate->add_option("--train-steps", c.ext.train_steps, "training steps [1, 2^40]");
  c.extrapolate->add_option("--train-batch", c.ext.train_batch, "sequences per training step [1, 2^24]");
  c.extrapolate->add_option("--json", c.ext.json_path, "write the results as JSON");
  c.extrapolate->add_option("--max-memory", c.ext.max_memory,
                            "memory budget per measured step (default: available RAM)");

  c.report = app.add_subcommand("report", "Render the HTML report of a saved `reckon train --json` file");
  c.report->add_option("json", c.report_in, "the JSON written by reckon train --json")->required();
  c.report->add_option("-o,--output", c.report_out, "the HTML file to write")->required();
}

// The subcommand must be one of ours; CLI11's parse errors exit 2 (a value that does not convert names what the
// option accepts). Returns -1 when parsing succeeded, else the exit code.
int parse_arguments(CLI::App& app, int argc, char** argv) {
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
  return -1;
}

int dispatch(const CLI::App& app, Commands& c) {
  try {
    reckon::refuse_empty_values(app);
    if (c.threads > 0) reckon::set_num_threads(c.threads);
    // OMP_NUM_THREADS is an input too: libgomp starts that many threads at the first parallel region (100000
    // crashes it), so it has --threads' range.
    if (c.threads == 0 && omp_get_max_threads() > 1024) {
      throw std::invalid_argument(fmt::format(
          "OMP_NUM_THREADS: {} is outside the allowed range [1, 1024] (or pass --threads)", omp_get_max_threads()));
    }
    fmt::print("{} | fmt {}.{}.{} CLI11 {} nlohmann_json {}.{}.{}\n", reckon::machine_summary(reckon::machine_info()),
               FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100, CLI11_VERSION,
               NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH);
    if (*c.demo) return reckon::run_demo(c.demo_rows, c.demo_in, c.demo_out, c.demo_max_memory);
    if (*c.train) {
      c.train_opts.config_given = c.train->count("--preset") + c.train->count("--config") +
                                      c.train->count("--hf-config") + c.train->count("--set") >
                                  0;
      c.train_opts.base_config_given =
          c.train->count("--preset") + c.train->count("--config") + c.train->count("--hf-config") > 0;
      c.train_opts.data_given = c.train->count("--data") > 0;
      c.train_opts.peak_gflops_given = c.train->count("--peak-gflops") > 0;
      c.train_opts.zero_given = c.train->count("--zero") > 0;
      return reckon::run_train(c.train_opts);
    }
    if (*c.reconcile) {
      c.rec_opts.zero_given = c.reconcile->count("--zero") > 0;
      return reckon::run_reconcile(c.rec_opts);
    }
    if (*c.report) return reckon::run_report(c.report_in, c.report_out);
    if (*c.estimate) {
      c.est.cluster.gpus_given = c.estimate->count("--gpus") > 0;
      c.est.cluster.link_gbps_given = c.estimate->count("--link-gbps") > 0;
      c.est.cluster.link_latency_given = c.estimate->count("--link-latency-us") > 0;
      c.est.zero_given = c.estimate->count("--zero") > 0;
      return reckon::run_estimate(c.est);
    }
    if (*c.extrapolate) return reckon::run_extrapolate(c.ext);
  } catch (const std::exception& e) {
    const reckon::ErrorExit exit = reckon::error_exit(e);
    fmt::print(stderr, "{}\n", exit.message);
    return exit.code;
  }
  return 0;
}

int run_main(int argc, char** argv) {
  if (reckon::comm_rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  CLI::App app{"reckon: where does every byte and every FLOP of a training step go?"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads) may follow the subcommand
  // A flag given twice: the last one wins, as in most command-line tools (--set accumulates).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Commands c;
  app.add_option("--threads", c.threads, "OpenMP threads [1, 1024] (default: OMP_NUM_THREADS or all cores)")
      ->check(CLI::Range(1, 1024));
  const std::string preset_list = fmt::format("{}", fmt::join(reckon::preset_names(), ", "));
  add_demo(app, c);
  add_train(app, c, preset_list);
  add_reconcile(app, c, preset_list);
  add_estimate(app, c, preset_list);
  add_extrapolate_and_report(app, c);
  const int parsed = parse_arguments(app, argc, argv);
  return parsed >= 0 ? parsed : dispatch(app, c);
}
}  // namespace
