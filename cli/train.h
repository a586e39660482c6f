// `reckon train`: a real training run on CPU, then where every byte and FLOP went.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reckon {

struct TrainOptions {
  std::string preset = "tiny";
  std::string config_file;             // TOML; overrides the preset when given
  std::vector<std::string> overrides;  // key=value, applied last
  int64_t steps = 20;
  std::string data = "/usr/share/common-licenses/GPL-3";  // or "random"
  std::string json_path;
  std::string trace_path;
  std::string max_memory;  // bytes with optional unit; default: available RAM
  double peak_gflops = 0;  // 0: measure the FMA peak at startup
  bool quiet = false;      // no per-step lines
  bool profile = false;    // per-op profile against this CPU's measured roofline
};

// Returns the process exit code: 0 ok, 2 bad input (message on stderr), 3 the run diverged.
int run_train(const TrainOptions& options);

}  // namespace reckon
