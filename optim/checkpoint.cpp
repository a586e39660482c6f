#include "optim/checkpoint.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "model/hf_checkpoint.h"
#include "runtime/check.h"

namespace reckon {

namespace {
constexpr const char* kFormat = "reckon-checkpoint-1";

std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(TrainingSession& run) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Parameter& p : run.model.parameters()) tensors.emplace_back(p.name, p.value);
  for (auto& named : run.optimizer.state_tensors()) tensors.push_back(std::move(named));
  return tensors;
}

// A count from the metadata: decimal digits only (no sign, space or exponent), within [0, max].
int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path,
                 int64_t max) {
  const auto it = m.find(key);
  check_arg(it != m.end(), "{}: checkpoint metadata has no '{}'", path, key);
  const std::string& text = it->second;
  int64_t v = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  const bool digits =
      !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  check_arg(digits && ec == std::errc() && end == text.data() + text.size() && v <= max,
            "{}: checkpoint metadata '{}' is '{}', not an integer in [0, {}]", path, key, text, max);
  return v;
}

// The config lines: key=value, each key at most once, the model's shape given.
void apply_config_lines(TrainConfig& config, const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> seen;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const std::string key = line.substr(0, line.find('='));
    check_arg(seen.insert(key).second, "'{}' is given twice", key);
    apply_override(config, line);
  }
  for (const char* key : {"vocab_size", "d_model", "num_layers", "num_heads", "context_length", "batch_size"}) {
    check_arg(seen.count(key) == 1, "no '{}' (a checkpoint's config gives the model's shape)", key);
  }
  validate(config);
}
}  // namespace

std::string checkpoint_bytes(TrainingSession& run, const TrainConfig& config, int64_t steps, const std::string& data,
                             const std::string& data_identity) {
  std::string lines;
  for (const std::string& kv : config_overrides(config)) lines += kv + "\n";
  std::map<std::string, std::string> metadata = {{"format", kFormat},
                                                 {"steps", std::to_string(steps)},
                                                 {"optimizer_steps", std::to_string(run.optimizer.steps_taken())},
                                                 {"preset", config.preset},
                                                 {"config", lines},
                                                 {"data", data}};
  if (!data_identity.empty()) metadata["data_identity"] = data_identity;
  return serialize_safetensors(checkpoint_tensors(run), metadata);
}

bool is_reckon_checkpoint(const Safetensors& file) {
  const auto format = file.metadata.find("format");
  return format != file.metadata.end() && format->second == kFormat;
}

CheckpointMeta read_checkpoint_meta(const Safetensors& file, const std::string& path) {
  const auto format = file.metadata.find("format");
  check_arg(format == file.metadata.end() || format->second != "pt",
            "{}: a Hugging Face-format file (weights only, no optimizer state or step count): start a run from it "
            "with --init-from and the model's config (--hf-config, --preset, --set), not --resume",
            path);
  check_arg(format != file.metadata.end() && format->second == kFormat,
            "{}: not a reckon checkpoint (metadata format is '{}', expected '{}')", path,
            format == file.metadata.end() ? std::string() : format->second, kFormat);
  CheckpointMeta meta;
  const auto preset = file.metadata.find("preset");
  meta.config.preset = preset == file.metadata.end() ? "checkpoint" : preset->second;
  const auto config = file.metadata.find("config");
  check_arg(config != file.metadata.end(), "{}: checkpoint metadata has no 'config'", path);
  try {
    apply_config_lines(meta.config, config->second);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: checkpoint config: {}", path, e.what()));
  }
  // Steps index the data (step k reads batch k's token positions, model/data.h): they stay within int64.
  const ModelConfig& m = meta.config.model;
  const int64_t tokens_per_step = m.batch_size * m.micro_batches() * m.context_length;
  const int64_t max_steps = std::numeric_limits<int64_t>::max() / tokens_per_step - kMaxStepsPerRun;
  meta.steps = meta_int(file.metadata, "steps", path, max_steps);
  meta.optimizer_steps = meta_int(file.metadata, "optimizer_steps", path, meta.steps);
  const auto data = file.metadata.find("data");
  check_arg(data != file.metadata.end() && !data->second.empty(), "{}: checkpoint metadata has no 'data'", path);
  meta.data = data->second;
  const auto identity = file.metadata.find("data_identity");
  if (identity != file.metadata.end()) meta.data_identity = identity->second;
  return meta;
}

void restore_checkpoint(TrainingSession& run, const Safetensors& file, const CheckpointMeta& meta,
                        const std::string& path) {
  std::set<std::string> expected;
  for (const auto& [name, tensor] : checkpoint_tensors(run)) {
    copy_from_safetensors(file, path, name, tensor);
    expected.insert(name);
  }
  for (const SafetensorsEntry& e : file.tensors) {
    check_arg(expected.count(e.name) == 1, "{}: tensor '{}' is not part of this model's checkpoint", path, e.name);
  }
  run.optimizer.set_steps_taken(meta.optimizer_steps);
}

void restore_parameters(Transformer& model, const Safetensors& file, const std::string& path) {
  std::set<std::string> expected, state;
  for (const Parameter& p : model.parameters()) {
    copy_from_safetensors(file, path, p.name, p.value);
    expected.insert(p.name);
    for (const char* s : {".exp_avg", ".exp_avg_sq", ".master"}) state.insert(p.name + s);
  }
  for (const SafetensorsEntry& e : file.tensors) {
    check_arg(expected.count(e.name) == 1 || state.count(e.name) == 1,
              "{}: tensor '{}' is not part of this model's checkpoint", path, e.name);
  }
}

std::string hf_checkpoint_bytes(TrainingSession& run, const TrainConfig& config, int64_t steps) {
  const HfStateDict hf = hf_state_dict(config.model);
  std::vector<Tensor> values;
  for (const Parameter& p : run.model.parameters()) values.push_back(p.value);
  std::string lines;
  for (const std::string& kv : config_overrides(config)) lines += kv + "\n";
  return serialize_safetensors(hf_tensors(hf, run.model.layout(), values), {{"format", "pt"},
                                                                            {"architecture", hf.architecture},
                                                                            {"producer", "reckon"},
                                                                            {"steps", std::to_string(steps)},
                                                                            {"config", lines}});
}

std::string gradients_bytes(const Transformer& model, const std::vector<std::pair<std::string, Tensor>>& extra,
                            const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> grads;
  for (const Parameter& p : model.parameters()) grads.emplace_back(p.name, p.grad);
  for (const auto& named : extra) grads.push_back(named);
  return serialize_safetensors(grads, metadata);
}

}  // namespace reckon
