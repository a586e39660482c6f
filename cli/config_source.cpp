#include "cli/config_source.h"

#include <fmt/format.h>

#include "model/hf_config.h"
#include "runtime/check.h"

namespace reckon {

namespace {

// The fields a config.json sets (the model's shape), as `--set` would write them.
constexpr const char* kShapeKeys[] = {
    "vocab_size", "context_length", "num_layers", "d_model",    "num_heads",      "num_kv_heads", "head_dim", "d_ff",
    "ffn",        "tie_embeddings", "position",   "rope_theta", "sliding_window", "rmsnorm_eps"};

void print_loaded(const std::string& path, const HfConfig& hf) {
  std::vector<std::string> shape;
  for (const std::string& line : config_overrides(hf.config)) {
    for (const char* key : kShapeKeys) {
      if (line.rfind(std::string(key) + "=", 0) == 0) shape.push_back(line);
    }
  }
  fmt::print("hf-config: {} (model_type {}): {}\n", path, hf.model_type, fmt::join(shape, " "));
  fmt::print("hf-config: ignored (they change nothing reckon counts): {}\n",
             hf.ignored.empty() ? std::string("none") : fmt::format("{}", fmt::join(hf.ignored, ", ")));
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
