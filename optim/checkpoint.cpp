#include "optim/checkpoint.h"

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

int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  const auto it = m.find(key);
  check_arg(it != m.end(), "{}: checkpoint metadata has no '{}'", path, key);
  int64_t v = -1;
  size_t used = 0;
  try {
    v = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check_arg(used == it->second.size() && used > 0 && v >= 0,
            "{}: checkpoint metadata '{}' is '{}', not an integer >= 0", path, key, it->second);
  return v;
}
}  // namespace

std::string checkpoint_bytes(TrainingSession& run, const TrainConfig& config, int64_t steps, const std::string& data) {
  std::string lines;
  for (const std::string& kv : config_overrides(config)) lines += kv + "\n";
  const std::map<std::string, std::string> metadata = {{"format", kFormat},
                                                       {"steps", std::to_string(steps)},
                                                       {"optimizer_steps", std::to_string(run.optimizer.steps_taken())},
                                                       {"preset", config.preset},
                                                       {"config", lines},
                                                       {"data", data}};
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
  meta.steps = meta_int(file.metadata, "steps", path);
  meta.optimizer_steps = meta_int(file.metadata, "optimizer_steps", path);
  const auto preset = file.metadata.find("preset");
  meta.config.preset = preset == file.metadata.end() ? "checkpoint" : preset->second;
  const auto config = file.metadata.find("config");
  check_arg(config != file.metadata.end(), "{}: checkpoint metadata has no 'config'", path);
  std::istringstream lines(config->second);
  std::string line;
  try {
    while (std::getline(lines, line)) {
      if (!line.empty()) apply_override(meta.config, line);
    }
    validate(meta.config);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: checkpoint config: {}", path, e.what()));
  }
  const auto data = file.metadata.find("data");
  check_arg(data != file.metadata.end() && !data->second.empty(), "{}: checkpoint metadata has no 'data'", path);
  meta.data = data->second;
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
