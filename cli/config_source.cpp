#include "cli/config_source.h"

#include <fmt/format.h>

#include "model/hf_config.h"
#include "runtime/check.h"

namespace reckon {

namespace {

void print_loaded(const std::string& path, const HfConfig& hf) {
  // The whole config (the file's model, reckon's run defaults), as `--set` lines would rebuild it.
  fmt::print("hf-config: {} (model_type {}): {}\n", path, hf.model_type, fmt::join(config_overrides(hf.config), " "));
  fmt::print("hf-config: ignored (they change nothing reckon counts): {}\n",
             hf.ignored.empty() ? std::string("none") : fmt::format("{}", fmt::join(hf.ignored, ", ")));
  if (!hf.left_out.empty()) {
    fmt::print("hf-config: left out of the counted step: {}\n", fmt::join(hf.left_out, "; "));
  }
}

}  // namespace

TrainConfig starting_config(const std::string& preset, const std::string& config_file, const std::string& hf_config) {
  check_arg(config_file.empty() || hf_config.empty(),
            "--config and --hf-config: give one (a TOML file may name a preset; --set applies on top of either)");
  if (!hf_config.empty()) {
    const HfConfig hf = load_hf_config(hf_config);
    print_loaded(hf_config, hf);
    return hf.config;
  }
  return config_file.empty() ? preset_config(preset) : load_config_file(config_file);
}

}  // namespace reckon
