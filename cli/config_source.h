// Where a command's config starts: a preset, a TOML file (--config) or a Hugging Face config.json (--hf-config),
// before its --set overrides. The same three flags, with the same meaning, for train, reconcile, estimate and
// (--hf-config as the target) extrapolate.
#pragma once

#include <string>

#include "model/config.h"

namespace reckon {

// --config and --hf-config together are refused (std::invalid_argument naming both). With --hf-config the loaded
// model is printed to stdout first, in reckon's key=value form, with the file's keys that change nothing reckon
// counts listed as ignored.
TrainConfig starting_config(const std::string& preset, const std::string& config_file, const std::string& hf_config);

}  // namespace reckon
