// `reckon train`: a real training run on CPU, then where every byte and FLOP went.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reckon {

struct TrainOptions {
  std::string preset = "tiny";
  std::string config_file;             // TOML; overrides the preset when given
  std::string hf_config;               // a Hugging Face config.json instead (cli/config_source.h)
  std::vector<std::string> overrides;  // key=value, applied last
  int64_t steps = 20;
  std::string data = "/usr/share/common-licenses/GPL-3";  // or "random"
  std::string json_path;
  std::string trace_path;
  std::string max_memory;              // bytes with optional unit; default: available RAM
  double peak_gflops = 0;              // with peak_gflops_given; else the FMA peak is measured at startup
  bool quiet = false;                  // no per-step lines
  bool profile = false;                // per-op profile against this CPU's measured roofline
  std::string save_path;               // --save: a checkpoint (safetensors) after the last step
  std::string resume_path;             // --resume: continue a checkpoint (its config and data; --steps more steps)
  std::string dump_grads_path;         // --dump-grads: the last step's gradients (safetensors, parameter names)
  std::string init_from_path;          // --init-from: start from these weights (a reckon or Hugging Face-format file)
  std::string save_format = "reckon";  // --save-format: reckon (resumable) or hf (Hugging Face state dict)
  int zero_stage = 0;                  // --zero S: the config field zero_stage (when zero_given)
  bool zero_given = false;
  std::string report_path;         // --report: the HTML report (memory over the last step, time per op, roofline)
  std::string plot_memory_path;    // --plot-memory: the memory picture alone (SVG)
  bool config_given = false;       // --preset, --config or --set on the command line (checked against --resume)
  bool base_config_given = false;  // --preset, --config or --hf-config (else --set applies to the default)
  bool data_given = false;         // --data on the command line
  bool peak_gflops_given = false;  // --peak-gflops: checked in [0.001, 1e9], else the FMA peak is measured
};

// Returns the process exit code: 0 ok, 2 bad input (message on stderr), 3 the run diverged.
int run_train(const TrainOptions& options);

}  // namespace reckon
