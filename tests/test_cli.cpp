// cli/: the `reckon` program as a user runs it: exit codes, messages naming the field and range, output files
// written whole or not at all, JSON and trace contents consistent with each other.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <limits>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/estimate.h"
#include "cli/html_report.h"
#include "cli/output.h"
#include "cli/table.h"
#include "cli/validate.h"
#include "runtime/checked.h"
#include "runtime/safetensors.h"

namespace reckon {
namespace {

struct CommandResult {
  int exit_code;
  std::string output;  // stdout + stderr
};

CommandResult run_with_env(const std::string& env, const std::string& args) {
  const std::string cmd = env + " " + std::string(RECKON_BIN) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
CommandResult run(const std::string& args) { return run_with_env("", args); }

// OMP_NUM_THREADS is input like --threads: past its range, exit 2 naming it before any work (libgomp crashed at
// 100000); --threads given overrides it.
TEST(Cli, OmpNumThreadsOutsideItsRangeIsRefusedNamingIt) {
  const CommandResult bad = run_with_env("OMP_NUM_THREADS=100000", "estimate --preset tiny");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("OMP_NUM_THREADS: 100000 is outside the allowed range [1, 1024]"), std::string::npos)
      << bad.output;
  EXPECT_EQ(bad.output.find("machine:"), std::string::npos) << bad.output;  // refused before any work
  EXPECT_EQ(run_with_env("OMP_NUM_THREADS=100000", "estimate --preset tiny --threads 2").exit_code, 0);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("reckon_cli_" + name)).string();
}

TEST(Cli, TrainWritesConsistentJsonAndTrace) {
  const std::string json = temp_path("train.json"), trace = temp_path("trace.json");
  std::filesystem::remove(json);
  std::filesystem::remove(trace);
  const CommandResult r =
      run("train --preset tiny --steps 3 --threads 2 --quiet --data random --json " + json + " --trace " + trace);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("## Memory at the peak, by category"), std::string::npos);
  EXPECT_NE(r.output.find("| lm_head"), std::string::npos);

  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["steps"].size(), 3u);
  EXPECT_EQ(j["config"]["d_model"], 64);
  // Every config field, typed, under its config key (the field table): tiny's values.
  EXPECT_EQ(j["config"]["preset"], "tiny");
  EXPECT_EQ(j["config"]["tie_embeddings"], false);
  EXPECT_EQ(j["config"]["precision"], "fp32");
  EXPECT_EQ(j["config"]["zero_stage"], 0);
  EXPECT_EQ(j["config"]["bucket_cap_mb"], 25.0);
  EXPECT_EQ(j["config"]["optim"]["adam_eps"], 1e-8);
  EXPECT_EQ(j["config"]["seed"], 1234);
  EXPECT_EQ(j["config"]["num_kv_heads"], 4);  // the values in effect: as many as num_heads, D / H
  EXPECT_EQ(j["config"]["head_dim"], 16);
  EXPECT_EQ(j["config"]["rope_theta"], 10000.0);
  EXPECT_EQ(j["config"]["sliding_window"], 0);
  EXPECT_EQ(j["config"]["rope_scaling"], "none");
  EXPECT_EQ(j["config"]["gradient_accumulation_steps"], 1);
  EXPECT_EQ(j["config"].size(), 43u);  // preset, 39 model fields, seed, optim
  EXPECT_EQ(j["config"]["optim"].size(), 5u);
  EXPECT_EQ(j["num_parameters"], 164160);
  EXPECT_EQ(j["memory"]["live_at_peak"][0]["dtype"], "float32");
  // The JSON's memory is the training's: the roofline probes run after it was taken (they allocate ~800 MB of
  // tracked buffers); the printed table's total peak is the JSON's.
  for (const auto& blk : j["memory"]["live_at_peak"])
    EXPECT_EQ(blk["name"].get<std::string>().rfind("probe.", 0), std::string::npos);
  for (const auto& blk : j["report"]["memory"]["peak"]["largest"])
    EXPECT_EQ(blk["name"].get<std::string>().rfind("probe.", 0), std::string::npos);
  EXPECT_NE(r.output.find(fmt_int(j["memory"]["allocated_bytes"]["all"]["peak"].get<int64_t>())), std::string::npos);
  EXPECT_LT(j["memory"]["allocated_bytes"]["all"]["peak"].get<int64_t>(), 20'000'000);
  int64_t breakdown_sum = 0;
  for (const auto& [cat, bytes] : j["memory"]["peak_breakdown"].items()) breakdown_sum += bytes.get<int64_t>();
  EXPECT_EQ(breakdown_sum, j["memory"]["allocated_bytes"]["all"]["peak"].get<int64_t>());
  EXPECT_EQ(j["warm_up_steps"], 2);  // primitives and first touch; AdamW state takes cached blocks in step 1
  EXPECT_EQ(j["counters"]["measured_steps"], 1);
  EXPECT_GT(j["counters"]["total"]["matmul_flops"].get<int64_t>(), 0);

  const nlohmann::json t = read_json(trace);
  int slices = 0, counters = 0;
  for (const auto& e : t["traceEvents"]) {
    slices += e["ph"] == "X";
    counters += e["ph"] == "C";
  }
  EXPECT_GT(slices, 50);
  EXPECT_GT(counters, 50);
  std::filesystem::remove(json);
  std::filesystem::remove(trace);
}

// A valid config that diverges: beta2 = 0 makes v = g², so a parameter whose gradient becomes exactly 0
// gets an update of m / eps (lr · 10⁸); the weights overflow within a few steps, as they would in PyTorch.
TEST(Cli, NonFiniteLossStopsTrainingWithExit3AndWritesNothing) {
  const std::string json = temp_path("diverged.json"), trace = temp_path("diverged_trace.json");
  std::filesystem::remove(json);
  std::filesystem::remove(trace);
  const CommandResult r =
      run("train --preset tiny --steps 200 --threads 2 --quiet --data random --set lr=10 "
          "--set beta2=0 --json " +
          json + " --trace " + trace);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("reckon: error: loss is"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Try a lower lr"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(json));
  EXPECT_FALSE(std::filesystem::exists(trace));
  // The same config at a sane lr trains through.
  EXPECT_EQ(run("train --preset tiny --steps 20 --threads 2 --quiet --data random --set beta2=0").exit_code, 0);
}

TEST(Cli, BadInputExitsTwoNamesTheFieldAndWritesNothing) {
  const std::string json = temp_path("bad.json");
  struct Bad {
    std::string args;
    std::string needle;
  };
  const std::vector<Bad> cases = {
      {"--set d_model=0", "d_model: 0 is outside the allowed range [1, 65536]"},
      {"--set num_heads=3", "num_heads: 3 does not divide d_model 64"},
      {"--set vocab_size=1", "vocab_size: 1"},
      {"--set context_length=0", "context_length: 0"},
      {"--set num_layers=0", "num_layers: 0"},
      {"--set d_ff=-1", "d_ff: -1"},
      {"--set batch_size=0", "batch_size: 0"},
      {"--set ffn=gelu", "ffn: 'gelu' is not allowed"},
      {"--set position=sinusoidal", "position: 'sinusoidal'"},
      {"--set position=alibi --set alibi_bias_max=0", "alibi_bias_max"},
      {"--set position=alibi --set alibi_bias_max=65", "alibi_bias_max"},
      {"--set position=alibi --set attn_logit_softcapping=30", "attn_logit_softcapping: 30 with position = alibi"},
      {"--set position=rope --set head_dim=3", "head_dim: 3 is odd"},
      {"--set sliding_window_pattern=1", "sliding_window_pattern: 1 would make every layer global"},
      {"--set attn_logit_softcapping=-1", "attn_logit_softcapping"},
      {"--set lr=-0.1", "lr: -0.1"},
      {"--set beta2=1", "beta2: 1"},
      {"--set norm_eps=0", "norm_eps: 0"},
      {"--set tie_embeddings=yes", "tie_embeddings: 'yes'"},
      {"--set nonsense=1", "unknown config key 'nonsense'"},
      {"--preset XXL", "preset: 'XXL'"},
      {"--steps 0", "--steps: 0"},
      {"--data /no/such/file", "--data: cannot read file"},
      {"--data /etc/passwd/x", "--data: cannot read file '/etc/passwd/x': Not a directory"},
      {"--peak-gflops 0", "--peak-gflops: 0 is outside the allowed range [0.001, 1000000000]"},
      {"--set norm_eps=1e-320", "norm_eps: 1e-320 is below float32's smallest normal number 1.1754944e-38"},
      {"--set adam_eps=4.9e-324", "adam_eps: 5e-324 is below float32's smallest normal number"},
      {"--set lr=1e-40", "lr: 1e-40 is below float32's smallest normal number"},
      {"--set vocab_size=100", "byte-level tokens need vocab_size >= 256"},
      {"--max-memory 12XB", "--max-memory: '12XB' is not a byte count"},
      {"--max-memory 1MB", "--max-memory: train: a training step of this config (batch_size 4) peaks at"},
      {"--max-memory 1TiB", "is above this machine's physical memory"},
      {"--data /dev/zero", "--data: '/dev/zero' is not a regular file"},
      {"--data /tmp", "--data: '/tmp' is not a regular file (it is a folder)"},
      {"--threads 0", "--threads: Value 0 not in range"},
      {"--threads 1025", "--threads: Value 1025 not in range"},
      {"--config /no/such.toml", "config file /no/such.toml"},
      {"--zero -1", "zero_stage: -1 is outside the allowed range [0, 3]"},
      {"--zero 4", "zero_stage: 4 is outside the allowed range [0, 3]"},
      {"--zero 3", "zero_stage: 3 shards across the ranks of mpirun, and this process runs alone"},
      {"--set bucket_cap_mb=0", "bucket_cap_mb: 0 is outside the allowed range [0.001, 4096]"},
      {"--set recompute=selective", "recompute: 'selective' is not allowed, allowed values are none, attention, full"},
      {"--report /no/such/dir/r.html", "--report: cannot write"},
      {"--save-format hf", "--save-format: hf needs --save PATH"},
      {"--save-format onnx --save /tmp/reckon_cli_bad.safetensors", "--save-format"},
      {"--save-format hf --save /tmp/reckon_cli_bad.safetensors", "--save-format hf: position: none"},
      {"--init-from /no/such.safetensors", "/no/such.safetensors"},
      {"--init-from /usr/share/common-licenses/GPL-3", "GPL-3"},
      {"--init-from /tmp/reckon_cli_bad.json", "--init-from"},
  };
  for (const Bad& b : cases) {
    std::filesystem::remove(json);
    const CommandResult r = run("train --preset tiny --steps 2 --quiet " + b.args + " --json " + json);
    EXPECT_EQ(r.exit_code, 2) << b.args << "\n" << r.output;
    EXPECT_NE(r.output.find(b.needle), std::string::npos) << b.args << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(json)) << b.args;
    EXPECT_FALSE(std::filesystem::exists(json + ".tmp")) << b.args;
  }
  // A file whose size stat does not know (/proc reports 0) is read to its end.
  const CommandResult proc = run("train --preset tiny --steps 1 --quiet --data /proc/self/status");
  EXPECT_EQ(proc.exit_code, 0) << proc.output;
  EXPECT_EQ(proc.output.find("(1 bytes"), std::string::npos) << proc.output;
  const CommandResult r = run("train --json /no/such/folder/out.json");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--json: cannot write"), std::string::npos) << r.output;
}

// `reckon report` reads a saved --json like any input: every field it draws is checked (type, finite, range),
// naming its key, before anything is drawn — the axis loops once ran forever on an infinite maximum — and a long
// timeline is thinned to the 1,500 points train --report keeps, the peak kept.
TEST(Report, HostileJsonIsRefusedNamingTheKeyAndLongTimelinesAreThinned) {
  const std::string json = temp_path("report_src.json"), html = temp_path("report_out.html");
  ASSERT_EQ(run("train --preset tiny --steps 2 --threads 2 --quiet --json " + json).exit_code, 0);
  const nlohmann::json good = read_json(json)["report"];
  EXPECT_NE(report_html(good).find("<svg"), std::string::npos);
  struct Bad {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {[](nlohmann::json& r) { r["roofline"]["matmul_gflops"] = 6e307; },
       "report.roofline.matmul_gflops is 6e+307, outside the allowed range (0, 1000000000000]"},
      {[](nlohmann::json& r) { r["memory"]["predicted_peak"] = 1.7e308; },
       "report.memory.predicted_peak is 1.7e+308, outside the allowed range [0, 45035996273704960]"},
      {[](nlohmann::json& r) {
         for (auto& [name, series] : r["memory"]["bytes"].items()) series[0] = 3e307;  // they sum past 1e308
       },
       "report.memory.bytes.parameter[0] is 3e+307, outside the allowed range [0, 9007199254740992]"},
      {[](nlohmann::json& r) { r["memory"]["t_ms"][1] = "soon"; },
       "report.memory.t_ms[1] must be a number, got string"},
      {[](nlohmann::json& r) { r["memory"]["t_ms"][1] = -1.0; }, "report.memory.t_ms[1] is -1.0, outside"},
      {[](nlohmann::json& r) { r["ops"][0]["op"] = 7; }, "report.ops[0].op must be a string, got number"},
      {[](nlohmann::json& r) { r["ops"][0].erase("ms"); }, "report.ops[0] has no 'ms'"},
      {[](nlohmann::json& r) { r["memory"]["bytes"]["gradient"].push_back(1); }, "report.memory.bytes.gradient has"},
      {[](nlohmann::json& r) { r["memory"]["peak"]["breakdown"]["temporary"] = nullptr; },
       "report.memory.peak.breakdown.temporary must be a number, got null"},
      {[](nlohmann::json& r) {
         for (int i = 0; i < 10001; ++i) r["ops"].push_back(r["ops"][0]);
       },
       "report.ops has 10"},
      {[](nlohmann::json& r) { r["title"] = std::string(5000, 't'); }, "report.title is 5000 bytes, above the allowed"},
  };
  for (const Bad& bad : cases) {
    nlohmann::json r = good;
    bad.edit(r);
    try {
      report_html(r);
      ADD_FAILURE() << "rendered: " << bad.message;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("report: " + bad.message), std::string::npos) << e.what();
    }
  }
  // The CLI: exit 2 naming the key, no page written.
  {
    nlohmann::json file = read_json(json);
    file["report"]["roofline"]["bandwidth_gbs"] = std::numeric_limits<double>::max();
    std::ofstream(json) << file.dump();
    std::filesystem::remove(html);
    const CommandResult r = run("report " + json + " --output " + html);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("report.roofline.bandwidth_gbs is 1.7976931348623157e+308"), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(html));
  }
  // 20,001 timeline points (the last the peak): the picture keeps at most 1,500, and the peak.
  nlohmann::json longer = good;
  nlohmann::json& mem = longer["memory"];
  const size_t n = 20001;
  mem["t_ms"] = nlohmann::json::array();
  for (auto& [name, series] : mem["bytes"].items()) series = nlohmann::json::array();
  for (size_t i = 0; i < n; ++i) {
    mem["t_ms"].push_back(static_cast<double>(i) * 0.001);
    for (auto& [name, series] : mem["bytes"].items()) series.push_back(i == 12345 ? 5000000 : 1000 + i % 7);
  }
  const std::string svg = memory_svg(longer);
  const size_t at = svg.find("class=\"cat-parameter\" points=\"");
  ASSERT_NE(at, std::string::npos);
  const std::string points = svg.substr(at, svg.find('"', at + 31) - at);
  const auto pairs = static_cast<size_t>(std::count(points.begin(), points.end(), ','));
  EXPECT_LE(pairs, 2 * kMaxTimelinePoints);  // the polygon: the top edge, then the bottom back
  EXPECT_GE(pairs, 2 * 1400u);
  nlohmann::json thin = longer;
  EXPECT_NE(report_html(thin).find("measured peak"), std::string::npos);
  std::filesystem::remove(json);
}

// Utilization divides by the precision's peak: float32's FMA peak in fp32; in the mixed modes the measured bf16
// matmul rate where it beats it — so the step's FLOP rate is a fraction of it (it was 1.16× the fp32 peak), and
// the JSON says which peak it was. The training's memory is the training's (probes are untracked).
TEST(Cli, UtilizationUsesThePrecisionsPeak) {
  const std::string json = temp_path("mixed.json");
  ASSERT_EQ(run("train --preset tiny --steps 3 --quiet --threads 2 --profile --set precision=amp-bf16 --json " + json)
                .exit_code,
            0);
  const nlohmann::json j = read_json(json);
  const double peak = j["utilization"]["peak_gflops"].get<double>();
  const double fma = j["report"]["roofline"]["fma_gflops"].get<double>();
  EXPECT_GE(peak, fma);
  EXPECT_EQ(j["utilization"]["peak_source"], peak > fma ? "measured bf16 matmul, oneDNN" : "measured FMA peak");
  EXPECT_GT(j["counters"]["fraction_of_peak"].get<double>(), 0.0);
  EXPECT_LE(j["counters"]["fraction_of_peak"].get<double>(), 1.0);
  EXPECT_EQ(j["counters"]["peak_gflops"].get<double>(), peak);
  for (const auto& blk : j["memory"]["live_at_peak"])
    EXPECT_FALSE(blk["name"].get<std::string>().starts_with("probe.")) << blk["name"];
  std::filesystem::remove(json);
}

// Output files: nothing outside the named path is touched; devices are written in place, never
// replaced; a reader never sees part of a file.
TEST(Output, SymlinksDevicesAndSamePaths) {
  const std::filesystem::path dir = temp_path("outputs");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string victim = (dir / "victim").string(), out = (dir / "out.json").string();
  { std::ofstream(victim) << "secret"; }
  auto victim_text = [&] {
    std::ifstream in(victim);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // The target itself a symlink: refused, the file it points to untouched.
  std::filesystem::create_symlink(victim, out);
  CommandResult r = run("estimate --preset tiny --json " + out);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("it is a symbolic link"), std::string::npos) << r.output;
  EXPECT_EQ(victim_text(), "secret");
  std::filesystem::remove(out);
  // The old predictable temporary name planted as a symlink: ignored (mkstemp picks a fresh name, O_EXCL).
  std::filesystem::create_symlink(victim, out + ".tmp");
  r = run("estimate --preset tiny --json " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(victim_text(), "secret");
  EXPECT_EQ(read_json(out)["num_parameters"], 164160);
  EXPECT_TRUE(std::filesystem::is_regular_file(std::filesystem::symlink_status(out)));
  // A character device made in the folder (as /dev/null: 1, 3): written in place, still a device after.
  const std::string dev = (dir / "null").string();
  if (mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    r = run("estimate --preset tiny --json " + dev + " --threads 2");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(std::filesystem::is_character_file(dev));
  }
  r = run("estimate --preset tiny --json /dev/full");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--json: cannot write '/dev/full': No space left on device"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::is_character_file("/dev/full"));
  // A folder, and two outputs (or an output and an input) naming one file.
  r = run("estimate --preset tiny --json " + dir.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("it is a folder"), std::string::npos) << r.output;
  r = run("train --preset tiny --steps 1 --data random --json " + out + " --trace " + dir.string() +
          "/../reckon_cli_outputs/out.json");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--json and --trace name the same file"), std::string::npos) << r.output;
  r = run("train --preset tiny --steps 1 --data " + victim + " --json " + victim);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--data and --json name the same file"), std::string::npos) << r.output;
  EXPECT_EQ(victim_text(), "secret");
  // No temporary left behind by any of it.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".reckon-"), std::string::npos) << entry.path();
  }
  std::filesystem::remove_all(dir);
}

// A run's outputs are written together, all of the files or none: /dev/full (a device that refuses the write)
// leaves no --json behind. Before the run: a path too long or a folder where no file can be made is refused naming
// the flag. /dev/stdout is this process's own stdout (a shell redirection to a file works). A path that is not
// UTF-8 (--data) is written into the JSON and the checkpoint as \xHH and resumes given again.
TEST(Output, AllOrNothingPathRulesAndNonUtf8Paths) {
  const std::filesystem::path dir = temp_path("outputs2");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string ok = (dir / "ok.json").string();
  CommandResult r = run("train --preset tiny --steps 1 --quiet --json " + ok + " --report /dev/full");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--report: cannot write '/dev/full': No space left on device"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(ok));
  const std::string long_name = (dir / std::string(250, 'n')).string();
  r = run("train --preset tiny --steps 1 --quiet --save " + long_name);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--save: the path is"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("step "), std::string::npos) << "refused after the run: " << r.output;
  r = run("train --preset tiny --steps 1 --quiet --json /proc/reckon.json");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--json: cannot write '/proc/reckon.json': cannot create a file in '/proc'"),
            std::string::npos)
      << r.output;
  const std::string captured = (dir / "captured.txt").string();
  EXPECT_EQ(std::system((std::string(RECKON_BIN) + " estimate --preset tiny --json /dev/stdout > " + captured).c_str()),
            0);
  {
    std::ifstream in(captured);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(text.find("\"num_parameters\": 164160"), std::string::npos) << text.substr(0, 400);
  }
  const std::string odd = (dir / "\xff\xfe-data.txt").string(), ck = (dir / "odd.safetensors").string();
  std::filesystem::copy_file("/usr/share/common-licenses/GPL-3", odd);
  r = run("train --preset tiny --steps 2 --quiet --data '" + odd + "' --json " + ok + " --save " + ck);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(read_json(ok)["data"].get<std::string>().find("\\xFF\\xFE-data.txt (35149 bytes"), std::string::npos);
  r = run("train --resume " + ck + " --steps 1 --quiet --data '" + odd + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed: "), std::string::npos) << r.output;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".reckon-"), std::string::npos) << entry.path();
  }
  std::filesystem::remove_all(dir);
}

// SIGTERM while the outputs are being written (here: blocked on a FIFO nobody reads, after the checkpoint's
// temporary is complete) removes the temporary: no hidden half-file is left.
TEST(Output, SignalDuringWriteLeavesNoTemporary) {
  const std::filesystem::path dir = temp_path("outputs3");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "fifo").string(), ck = (dir / "c.safetensors").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int quiet = open("/dev/null", O_WRONLY);
    dup2(quiet, 1);
    dup2(quiet, 2);
    const std::string bin = RECKON_BIN;
    execl(bin.c_str(), bin.c_str(), "train", "--preset", "tiny", "--steps", "1", "--quiet", "--save", ck.c_str(),
          "--json", fifo.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool temporary_seen = false;
  for (int i = 0; i < 600 && !temporary_seen; ++i) {  // up to 60 s for the run to reach its writes
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      temporary_seen |= entry.path().filename().string().find(".reckon-") != std::string::npos;
    if (!temporary_seen) usleep(100000);
  }
  EXPECT_TRUE(temporary_seen);
  usleep(200000);  // the temporary written whole and the process blocked opening the FIFO
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".reckon-"), std::string::npos) << entry.path();
  }
  EXPECT_FALSE(std::filesystem::exists(ck));
  std::filesystem::remove_all(dir);
}

TEST(Output, ConcurrentWritersNeverShowAPartialFile) {
  const std::string out = temp_path("concurrent.json");
  std::filesystem::remove(out);
  std::atomic<bool> done{false};
  std::atomic<int> partial{0}, reads{0};
  std::thread reader([&] {
    while (!done) {
      std::ifstream in(out);
      if (!in) continue;
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      ++reads;
      if (!nlohmann::json::accept(text)) ++partial;
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int w = 0; w < 6; ++w) {
    writers.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (run("estimate --preset tiny --json " + out).exit_code != 0) ++failed;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(partial, 0) << "of " << reads << " reads";
  EXPECT_GT(reads, 0);
  EXPECT_EQ(read_json(out)["num_parameters"], 164160);
  std::filesystem::remove(out);
}

// --save / --resume: 4 steps, saved, then 2 resumed steps equal steps 5 and 6 of a 6-step run bit for bit (the
// JSON holds each loss as a shortest round-trip double); --dump-grads writes the last step's gradients; a resume
// that names a config, other data, a foreign or a damaged file exits 2 and writes nothing.
TEST(Cli, CheckpointResumeIsBitExactAndBadCheckpointsAreRefused) {
  const std::string c4 = temp_path("c4.safetensors"), c6 = temp_path("c6.safetensors"),
                    grads = temp_path("g.safetensors");
  const std::string a = temp_path("a.json"), b = temp_path("b.json"), full = temp_path("full.json");
  for (const std::string& f : {c4, c6, grads, a, b, full}) std::filesystem::remove(f);
  const std::string common = " --threads 2 --quiet --set precision=fp32 --set attention=flash ";
  ASSERT_EQ(run("train --preset tiny --steps 4 --save " + c4 + common + "--json " + a).exit_code, 0);
  const CommandResult resumed = run("train --resume " + c4 + " --steps 2 --threads 2 --quiet --save " + c6 +
                                    " --dump-grads " + grads + " --json " + b);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("after step 4 (AdamW step 4); steps 5 to 6"), std::string::npos) << resumed.output;
  ASSERT_EQ(run("train --preset tiny --steps 6" + common + "--json " + full).exit_code, 0);
  auto losses = [](const std::string& path) {
    std::ifstream in(path);
    const nlohmann::json j = nlohmann::json::parse(in);
    std::vector<double> out;
    for (const auto& s : j["steps"]) out.push_back(s["loss"].get<double>());
    return out;
  };
  const std::vector<double> l6 = losses(full), lr = losses(b);
  ASSERT_EQ(l6.size(), 6u);
  ASSERT_EQ(lr.size(), 2u);
  EXPECT_EQ(lr[0], l6[4]);
  EXPECT_EQ(lr[1], l6[5]);
  const Safetensors g = read_safetensors(grads, 1 << 30);
  EXPECT_NE(g.find("layers.1.ffn.w2.weight"), nullptr);
  EXPECT_EQ(g.metadata.at("step"), "6");
  EXPECT_EQ(std::stod(g.metadata.at("loss")), l6[5]);

  // A damaged copy: the last 100 bytes cut off.
  const std::string cut = temp_path("cut.safetensors");
  std::filesystem::copy_file(c6, cut, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) - 100);
  struct Bad {
    std::string args;
    std::string needle;
  };
  const std::vector<Bad> cases = {
      {"--resume " + c6 + " --preset S", "--resume: the config comes from the checkpoint"},
      {"--resume " + c6 + " --set lr=0.1", "give 1 other value(s): lr=0.1 (the checkpoint has "},
      {"--resume " + c6 + " --data random", "--data: 'random' differs from the checkpoint's data"},
      {"--resume " + grads, "not a reckon checkpoint (metadata format is ''"},
      {"--resume " + cut, "not a valid safetensors file"},
      {"--resume /no/such.safetensors", "/no/such.safetensors: not a regular file"},
      {"--preset tiny --save /no/such/dir/c.safetensors", "--save: cannot write"},
  };
  const std::string out = temp_path("never.json");
  for (const Bad& bad : cases) {
    std::filesystem::remove(out);
    const CommandResult r = run("train --steps 1 --quiet " + bad.args + " --json " + out);
    EXPECT_EQ(r.exit_code, 2) << bad.args << "\n" << r.output;
    EXPECT_NE(r.output.find(bad.needle), std::string::npos) << bad.args << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << bad.args;
  }
  // --preset and --set repeating the checkpoint's own config are accepted.
  const CommandResult same = run("train --resume " + c6 + " --preset tiny" + common + "--steps 1");
  EXPECT_EQ(same.exit_code, 0) << same.output;
  // The data file's contents are in the checkpoint (size and fingerprint): resumed on the same bytes, or refused.
  const std::string data = temp_path("resume_data.txt"), cd = temp_path("cd.safetensors");
  std::filesystem::copy_file("/usr/share/common-licenses/GPL-3", data,
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_EQ(run("train --preset tiny --steps 2 --quiet --threads 2 --data " + data + " --save " + cd).exit_code, 0);
  EXPECT_EQ(run("train --resume " + cd + " --steps 1 --quiet --threads 2").exit_code, 0);
  std::ofstream(data, std::ios::app) << "one more line\n";
  const CommandResult changed = run("train --resume " + cd + " --steps 1 --quiet --json " + out);
  EXPECT_EQ(changed.exit_code, 2) << changed.output;
  EXPECT_NE(changed.output.find("--resume: the data '" + data +
                                "' changed since the checkpoint was written (then bytes=35149"),
            std::string::npos)
      << changed.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// gradient_accumulation_steps through train: 2 micro-batches of 2 rows per step on a text file follow one batch of 4
// (the same rows; losses within 1e-6), tokens/s counts the step's 2·2·T tokens, a checkpoint resumes bit for bit,
// a resume that changes K is refused naming it (the data position depends on it), and --dump-grads holds the step's
// 4 rows (its gradients are theirs).
TEST(Cli, GradientAccumulationTrainsResumesAndDumpsTheStepsRows) {
  const std::string data = temp_path("accum_data.txt"), ck = temp_path("accum.safetensors"),
                    grads = temp_path("accum_grads.safetensors");
  std::filesystem::copy_file("/usr/share/common-licenses/GPL-3", data,
                             std::filesystem::copy_options::overwrite_existing);
  const std::string common = " --preset tiny --threads 2 --quiet --data " + data + " ";
  auto losses = [](const std::string& path) {
    std::ifstream in(path);
    const nlohmann::json j = nlohmann::json::parse(in);
    std::vector<double> out;
    for (const auto& s : j["steps"]) out.push_back(s["loss"].get<double>());
    return std::make_pair(out, j);
  };
  const std::string one = temp_path("accum1.json"), two = temp_path("accum2.json"), resumed = temp_path("accum3.json");
  ASSERT_EQ(run("train --steps 6" + common + "--set batch_size=4 --json " + one).exit_code, 0);
  const CommandResult r =
      run("train --steps 6" + common + "--set batch_size=2 --set gradient_accumulation_steps=2 " + "--json " + two);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto [l1, j1] = losses(one);
  const auto [l2, j2] = losses(two);
  ASSERT_EQ(l1.size(), 6u);
  ASSERT_EQ(l2.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(l2[i], l1[i], 1e-6 * l1[i]) << "step " << i + 1;
  for (const auto& s : j2["steps"]) {
    EXPECT_NEAR(s["tokens_per_second"].get<double>() * s["seconds"].get<double>(), 2 * 2 * 32, 1e-6);
  }
  EXPECT_EQ(j2["config"]["gradient_accumulation_steps"], 2);

  std::filesystem::remove(ck);
  ASSERT_EQ(
      run("train --steps 4" + common + "--set batch_size=2 --set gradient_accumulation_steps=2 --save " + ck).exit_code,
      0);
  const CommandResult res = run("train --resume " + ck + " --steps 2 --threads 2 --quiet --data " + data + " --json " +
                                resumed + " --dump-grads " + grads);
  ASSERT_EQ(res.exit_code, 0) << res.output;
  const auto [l3, j3] = losses(resumed);
  ASSERT_EQ(l3.size(), 2u);
  EXPECT_EQ(l3[0], l2[4]);
  EXPECT_EQ(l3[1], l2[5]);
  const Safetensors g = read_safetensors(grads, 1 << 30);
  ASSERT_NE(g.find("batch.tokens"), nullptr);
  EXPECT_EQ(g.find("batch.tokens")->shape, (std::vector<int64_t>{4, 32}));

  const std::string never = temp_path("accum_never.json");
  std::filesystem::remove(never);
  const CommandResult changed = run("train --resume " + ck + " --steps 1 --quiet --data " + data +
                                    " --set gradient_accumulation_steps=3 --json " + never);
  EXPECT_EQ(changed.exit_code, 2) << changed.output;
  EXPECT_NE(changed.output.find("gradient_accumulation_steps=3 (the checkpoint has 2)"), std::string::npos)
      << changed.output;
  EXPECT_FALSE(std::filesystem::exists(never));
  const CommandResult bad = run("train --preset tiny --steps 1 --set gradient_accumulation_steps=0 --json " + never);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("gradient_accumulation_steps: 0 is outside the allowed range [1, 65536]"),
            std::string::npos)
      << bad.output;
  EXPECT_FALSE(std::filesystem::exists(never));
}

TEST(Cli, ReconcilePresetExitsZeroWhenExact) {
  const CommandResult r = run("reconcile --preset tiny --set batch_size=3 --set position=learned");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 of 1 config(s) exact to the byte and the FLOP"), std::string::npos) << r.output;
}

// A Hugging Face config.json (SmolLM2-135M's architecture fields, released values): estimate prints the loaded config
// and its published count; a scaled-down copy trains, reconciles exactly and extrapolates; --config with --hf-config
// and a refused family exit 2 writing nothing.
TEST(Cli, HfConfigLoadsEstimatesTrainsAndReconciles) {
  const std::string path = temp_path("smollm2_config.json");
  {
    std::ofstream out(path);
    out << R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 576,
               "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
               "num_key_value_heads": 3, "max_position_embeddings": 8192, "tie_word_embeddings": true,
               "rope_theta": 100000, "rope_scaling": null, "rms_norm_eps": 1e-05, "hidden_act": "silu",
               "attention_bias": false, "mlp_bias": false})";
  }
  const CommandResult e = run("estimate --hf-config " + path + " --set context_length=2048");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  for (const char* needle :
       {"(model_type llama): vocab_size=49152 context_length=8192 num_layers=30 d_model=576 num_heads=9 num_kv_heads=3",
        "position=rope rope_theta=100000", "ignored (they change nothing reckon counts): architectures",
        "config: hf:llama | V 49152, T 2048, L 30, D 576, H 9 (GQA 3)", "134,515,008"}) {
    EXPECT_NE(e.output.find(needle), std::string::npos) << needle << "\n" << e.output;
  }
  const std::string small =
      " --hf-config " + path +
      " --set num_layers=2 --set d_model=72 --set d_ff=96 --set vocab_size=300 --set context_length=24";
  const CommandResult rec = run("reconcile" + small + " --set batch_size=2");
  EXPECT_EQ(rec.exit_code, 0) << rec.output;
  EXPECT_NE(rec.output.find("1 of 1 config(s) exact"), std::string::npos) << rec.output;
  const CommandResult train = run("train" + small + " --steps 4 --data random --quiet");
  EXPECT_EQ(train.exit_code, 0) << train.output;
  const std::string json = temp_path("hf_bad.json");
  std::filesystem::remove(json);
  const CommandResult both = run("estimate --config " + path + " --hf-config " + path + " --json " + json);
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("--config and --hf-config: give one"), std::string::npos) << both.output;
  // A family reckon does not model (Mixtral's experts) exits 2 naming what it needs, and writes nothing.
  const std::string moe = temp_path("moe_config.json");
  {
    std::ofstream out(moe);
    out << R"({"model_type": "mixtral", "hidden_size": 4096})";
  }
  const CommandResult q = run("train --hf-config " + moe + " --json " + json);
  EXPECT_EQ(q.exit_code, 2) << q.output;
  EXPECT_NE(q.output.find("model_type: 'mixtral' is refused"), std::string::npos) << q.output;
  EXPECT_FALSE(std::filesystem::exists(json));
}

// A CPU without bf16 matmuls (oneDNN capped at AVX2, as on a machine without AVX-512): a mixed precision exits 2
// naming the ISA it needs, before any step runs; the machine line says bf16 is unavailable; fp32 still runs.
TEST(Cli, MixedPrecisionRefusedWithoutBf16Isa) {
  const std::string env = "env ONEDNN_MAX_CPU_ISA=AVX2 ";
  const std::string cmd = std::string(RECKON_BIN);
  for (const char* p : {"amp-bf16", "bf16"}) {
    FILE* pipe = popen((env + cmd + " train --preset tiny --steps 2 --set precision=" + p + " 2>&1").c_str(), "r");
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    const int status = pclose(pipe);
    EXPECT_EQ(WEXITSTATUS(status), 2) << out;
    EXPECT_NE(out.find(std::string("precision = ") + p + ": this CPU cannot run bf16 matmuls"), std::string::npos)
        << out;
    EXPECT_NE(out.find("needs AVX-512 (avx512_core"), std::string::npos) << out;
    EXPECT_NE(out.find("bf16 matmul unavailable"), std::string::npos) << out;
  }
  EXPECT_EQ(std::system((env + cmd + " train --preset tiny --steps 2 > /dev/null 2>&1").c_str()), 0);
}

TEST(ParseBytes, UnitsAndErrors) {
  EXPECT_EQ(parse_bytes("--x", "80GB"), 80000000000LL);
  EXPECT_EQ(parse_bytes("--x", "80GiB"), 80LL << 30);
  EXPECT_EQ(parse_bytes("--x", "1.5MB"), 1500000);
  EXPECT_EQ(parse_bytes("--x", "512MiB"), 512LL << 20);
  EXPECT_EQ(parse_bytes("--x", "123"), 123);
  for (const char* bad : {"", "GB", "-5GB", "1.2.3GB", "10 GB", "5XB", "0", "99999999999TB"}) {
    EXPECT_THROW(parse_bytes("--memory-budget", bad), std::invalid_argument) << bad;
  }
  try {
    parse_bytes("--memory-budget", "8 GB");
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--memory-budget: '8 GB'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("KiB, MiB, GiB, TiB"), std::string::npos);
  }
}

// Each `estimate --preset gpt2-xl <args>` exits 2 with `needle` in its output and writes no JSON.
struct BadEstimate {
  std::string args, needle;
};
void expect_estimate_refusals(const std::string& json, const std::vector<BadEstimate>& cases) {
  for (const BadEstimate& b : cases) {
    std::filesystem::remove(json);
    const CommandResult e = run("estimate --preset gpt2-xl " + b.args + " --json " + json);
    EXPECT_EQ(e.exit_code, 2) << b.args << e.output;
    EXPECT_NE(e.output.find(b.needle), std::string::npos) << b.args << e.output;
    EXPECT_FALSE(std::filesystem::exists(json)) << b.args;
  }
  std::filesystem::remove(json);
}

TEST(Cli, EstimateAnswersGpt2XlAndRejectsBadInput) {
  const std::string json = temp_path("estimate.json");
  std::filesystem::remove(json);
  const CommandResult r = run("estimate --preset gpt2-xl --memory-budget 80GB --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["num_parameters"], 1635537600LL);
  EXPECT_EQ(j["memory"]["fixed_bytes"], 16 * 1635537600LL);
  EXPECT_EQ(j["memory"]["max_batch"], 5);
  // Every precision side by side: fp32 16, amp-bf16 16 (+ its weight copies), bf16 16, bf16 with fp32 grads 18.
  ASSERT_EQ(j["precisions"].size(), 4u);
  EXPECT_EQ(j["precisions"][0]["max_batch"], 5);
  EXPECT_EQ(j["precisions"][0]["gpu_math"], "fp32");
  EXPECT_EQ(j["precisions"][2]["parameter_state_bytes"], 16 * 1635537600LL);
  EXPECT_EQ(j["precisions"][3]["parameter_state_bytes"], 18 * 1635537600LL);
  EXPECT_EQ(j["precisions"][3]["gpu_math"], "bf16");
  // amp-bf16 by independent arithmetic: the batch-free bytes are 16 B per parameter plus a bf16 copy of every
  // matmul weight (attention 4·D², ffn 2·D·d_ff per layer, the LM head V·D), all alive at the backward peak.
  const int64_t matmul_weights = 48LL * (4 * 1600 * 1600 + 2 * 1600 * 6400) + 50257LL * 1600;
  EXPECT_EQ(j["precisions"][1]["fixed_bytes"], 16 * 1635537600LL + 2 * matmul_weights);
  // Naive vs flash attention (fp32): flash keeps no B·H·T² probabilities — per layer and sample that is
  // H·T²·4 B = 25·1024²·4 = 104,857,600 B per layer and sample, and keeps H·T·4 B of log-sum-exp instead: at
  // the backward peak that is exactly the per-sample difference (48 layers) — and the max batch doubles; its FLOPs
  // count the causal half of attention plus the recomputed scores.
  ASSERT_EQ(j["attention"].size(), 2u);
  EXPECT_EQ(j["attention"][0]["attention"], "naive");
  EXPECT_EQ(j["attention"][0]["max_batch"], 5);
  EXPECT_EQ(j["attention"][1]["max_batch"], 10);
  const int64_t saved_probs = 48LL * 25 * 1024 * 1024 * 4;
  const int64_t per_sample_gap =
      j["attention"][0]["per_sample_bytes"].get<int64_t>() - j["attention"][1]["per_sample_bytes"].get<int64_t>();
  EXPECT_EQ(per_sample_gap, saved_probs - 48LL * 25 * 1024 * 4);  // minus the float32 lse rows flash keeps
  EXPECT_LT(j["attention"][1]["step_flops"].get<int64_t>(), j["attention"][0]["step_flops"].get<int64_t>());
  const CommandResult amp = run("estimate --preset gpt2-xl --precision amp-bf16 --json " + json);
  ASSERT_EQ(amp.exit_code, 0) << amp.output;
  const nlohmann::json ja = read_json(json);
  EXPECT_EQ(ja["memory"]["fixed_bytes"], 16 * 1635537600LL + 2 * matmul_weights);
  EXPECT_EQ(ja["training"]["gpu_math"], "bf16");
  EXPECT_EQ(ja["training"]["precision"], "amp-bf16");
  const CommandResult tb = run("estimate --preset gpt2-xl --activations textbook");
  EXPECT_EQ(tb.exit_code, 0);
  EXPECT_NE(tb.output.find("textbook list"), std::string::npos);
  expect_estimate_refusals(json,
                           {{"--memory-budget 80XB", "--memory-budget: '80XB'"},
                            {"--gpu v100", "--gpu: 'v100'"},
                            {"--precision fp8", "--precision: 'fp8'"},
                            {"--mfu 1.5", "--mfu: 1.5"},
                            {"--activations some", "--activations: 'some'"},
                            {"--train-batch 0", "--train-batch: 0 is outside the allowed range [1, 16777216]"},
                            {"--mfu 1e-320", "--mfu: 1e-320 is outside the allowed range [1e-06, 1]"},
                            {"--mfu nan", "--mfu: nan is outside"},
                            {"--train-steps 9223372036854775807", "--train-steps: 9223372036854775807 is outside"},
                            {"--train-steps 1099511627776 --train-batch 16777216",
                             "tokens do not fit int64 (largest value 9223372036854775807); lower --train-steps "
                             "to at most 536870911"},
                            {"--set context_length=131072 --set batch_size=4096",
                             "the largest batch_size that fits at context_length 131072 is 537"},
                            {"--set num_heads=7", "num_heads: 7 does not divide d_model 1600"}});
}

// `estimate --gpus N --zero S`: per-GPU figures of every ZeRO stage from one rank's replay and counts; GPT-2 XL in
// bf16 (the ZeRO paper's 2 + 2 + 12) on 8 A100s by the paper's own table, which reckon meets to the byte here (XL's
// tensors are 64-byte multiples and 8 divides its shards evenly enough); bad cluster input refused.
TEST(Cli, EstimateGpt2XlOnEightGpusPerZeroStage) {
  const std::string json = temp_path("cluster.json");
  std::filesystem::remove(json);
  const CommandResult r = run("estimate --preset gpt2-xl --precision bf16 --gpus 8 --zero 3 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("## Data parallel: 8 × NVIDIA A100 80GB (SXM)"), std::string::npos);
  const nlohmann::json c = read_json(json)["cluster"];
  ASSERT_EQ(c["stages"].size(), 4u);
  const double psi = 1635537600.0, n = 8;
  const double paper[4] = {16 * psi, 4 * psi + 12 * psi / n, 2 * psi + 14 * psi / n, 16 * psi / n};
  for (int s = 0; s < 4; ++s) {
    const nlohmann::json& st = c["stages"][s];
    EXPECT_NEAR(st["model_states_bytes"].get<double>(), paper[s], 64.0 * 4 * 500) << "stage " << s;
    EXPECT_GT(st["peak_bytes"].get<double>(), st["model_states_bytes"].get<double>()) << "activations on top";
  }
  // Each stage needs less per GPU than the one before, and fits a larger batch (or the same).
  for (int s = 1; s < 4; ++s) {
    EXPECT_LT(c["stages"][s]["peak_bytes"].get<int64_t>(), c["stages"][s - 1]["peak_bytes"].get<int64_t>());
    EXPECT_GE(c["stages"][s]["max_batch_per_gpu"].get<int64_t>(),
              c["stages"][s - 1]["max_batch_per_gpu"].get<int64_t>());
  }
  // Traffic in Ψ: ring all-reduce 2(N−1)/N; reduce-scatter + all-gather the same; stage 3 gathers each layer and
  // the head twice but XL's untied embedding once (its backward needs no weights), and reduce-scatters once.
  const double share = (n - 1) / n, emb = 50257.0 * 1600 / psi;
  EXPECT_NEAR(c["stages"][0]["psi_volume"].get<double>(), 2 * share, 1e-9);
  EXPECT_NEAR(c["stages"][1]["psi_volume"].get<double>(), 2 * share, 1e-9);
  EXPECT_NEAR(c["stages"][2]["psi_volume"].get<double>(), 2 * share, 1e-9);
  EXPECT_NEAR(c["stages"][3]["psi_volume"].get<double>(), share * (2 * (1 - emb) + emb) + share, 1e-9);
  EXPECT_EQ(c["link"]["name"], "NVLink 3");
  const CommandResult ib = run("estimate --preset gpt2-xl --gpus 64 --json " + json);
  ASSERT_EQ(ib.exit_code, 0) << ib.output;
  EXPECT_EQ(read_json(json)["cluster"]["link"]["name"], "InfiniBand HDR 200 Gb/s");
  expect_estimate_refusals(
      json, {{"--gpus 0", "--gpus: 0 is outside the allowed range [1, 65536]"},
             {"--gpus 8 --link pcie", "--link: 'pcie' is not allowed; allowed values are auto, nvlink, infiniband"},
             {"--gpus 8 --link-gbps 0", "--link-gbps: 0 is outside"},
             {"--gpus 8 --link-latency-us -1", "--link-latency-us: -1 is outside"},
             {"--gpus 8 --zero 5", "zero_stage: 5 is outside the allowed range [0, 3]"},
             {"--link-gbps 100", "--link-gbps: describes the link between GPUs of --gpus N; give --gpus too"},
             {"--link nvlink", "--link: describes the link between GPUs of --gpus N"},
             {"--link-latency-us 3", "--link-latency-us: describes the link"}});
  // The config's own step fits int64; the counts estimate derives from it (the step at batch 2 and 3, the ranks)
  // do not: one message naming the fields that scale them.
  const std::string big = temp_path("big_estimate.json");
  std::filesystem::remove(big);
  const CommandResult huge = run(
      "estimate --preset gpt3-175b --set num_layers=1024 --set context_length=131072 --gpus 65536 --zero 3 --json " +
      big);
  EXPECT_EQ(huge.exit_code, 2) << huge.output;
  EXPECT_NE(huge.output.find("batch_size 1 × context_length 131072 × num_layers 1024 (d_model 12288, --gpus 65536): "
                             "a count estimate derives from this config does not fit int64"),
            std::string::npos)
      << huge.output;
  EXPECT_FALSE(std::filesystem::exists(big));
}

// The predicted step: a table per op × phase with what bounds it, the step line, and the JSON's gpu_step from the same
// values (its op rows summing to the compute, the step = compute + exposed communication).
TEST(Cli, EstimatePrintsThePredictedGpuStep) {
  const std::string json = temp_path("gpu_step.json");
  const CommandResult r =
      run("estimate --preset gpt2-small --set precision=amp-bf16 --set attention=flash --set batch_size=4 "
          "--gpu h100-sxm --gpus 8 --zero 3 --json " +
          json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("## Predicted step on NVIDIA H100 SXM 80GB (bf16, batch 4 per GPU, 8 GPUs, ZeRO-3)"),
            std::string::npos)
      << r.output;
  const nlohmann::json g = read_json(json)["gpu_step"];
  EXPECT_EQ(g["gpu"], "h100-sxm");
  EXPECT_EQ(g["gpus"], 8);
  double sum = 0, comm = 0;
  for (const auto& row : g["ops"]) (row["phase"] == "communication" ? comm : sum) += row["seconds"].get<double>();
  EXPECT_NEAR(sum, g["compute_seconds"].get<double>(), 1e-9);
  EXPECT_NEAR(comm, g["communication_seconds"].get<double>(), 1e-9);
  EXPECT_GT(comm, 0);
  EXPECT_NEAR(g["seconds"].get<double>(), sum + g["exposed_communication_seconds"].get<double>(), 1e-9);
  EXPECT_LE(g["exposed_communication_seconds"].get<double>(), comm + 1e-12);
  EXPECT_NEAR(g["tokens_per_second_per_gpu"].get<double>(), 4 * 1024 / g["seconds"].get<double>(), 1e-6);
  EXPECT_NE(r.output.find(fmt::format("{:.0f} tokens/s per GPU", g["tokens_per_second_per_gpu"].get<double>())),
            std::string::npos);
  std::filesystem::remove(json);
}

// Large but legal-looking inputs: each an answer or one clear error with exit 2, never a signal.
TEST(Cli, LargeInputsAnswerOrFailCleanly) {
  // M = B·T = 2^32 rows is beyond oneDNN's int32 dimensions (it died with SIGFPE): the arithmetic answers and
  // the scratchpad line says why it was not queried; train refuses it by the memory budget first.
  const CommandResult e = run("estimate --preset tiny --set context_length=131072 --set batch_size=32768");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("not queried: matmul: a (4294967296, 64)"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("18,041,972,199,522,304"), std::string::npos) << e.output;  // activations at the peak
  const CommandResult t =
      run("train --preset tiny --set context_length=131072 --set batch_size=32768 --steps 1 --data random");
  EXPECT_EQ(t.exit_code, 2) << t.output;
  EXPECT_NE(
      t.output.find(
          "--max-memory: train: a training step of this config (batch_size 32768) peaks at 27,054,669,015,028,736 B"),
      std::string::npos)
      << t.output;
  // A training batch of 2^24 sequences: step FLOPs beyond int64, held exactly-linear in a double.
  const CommandResult big = run("estimate --train-batch 16777216");
  EXPECT_EQ(big.exit_code, 0) << big.output;
  struct Bad {
    std::string args, needle;
  };
  for (const Bad& b : std::vector<Bad>{
           {"frobnicate",
            "unknown subcommand 'frobnicate'; valid subcommands: demo, train, reconcile, estimate, extrapolate"},
           {"--threads 2", "a subcommand is required; valid subcommands: demo, train"},
           {"estimate --json ''", "--json: an empty value is not allowed"},
           {"train --trace '' --preset tiny", "--trace: an empty value is not allowed"},
           {"train --preset tiny --steps 1 --data random --peak-gflops nan", "--peak-gflops: nan is outside"},
           {"train --preset tiny --steps 1 --data random --peak-gflops 1e300", "--peak-gflops: 1e+300 is outside"},
           {"extrapolate --validate tiny --train-steps 0", "--train-steps: 0 is outside the allowed range"},
           // 65,536 micro-batches of Llama 3 70B at T 8192: the step's FLOPs pass int64; the answer names the field
           {"estimate --preset llama3-70b --set gradient_accumulation_steps=65536",
            "the largest gradient_accumulation_steps that fits at batch_size 1 is "},
           {"extrapolate --validate tiny --target-batch 1048576",
            "--target-batch: 1048576 is outside the allowed range [1, 65536]"},
           {"estimate --batch-size 65537", "--batch-size: Value 65537 not in range 1 to 65536"},
           {"train --steps abc", "--steps: 'abc' is not a valid value; allowed: training steps [1, 10000000]"},
           {"extrapolate --steps q",
            "--steps: 'q' is not a valid value; allowed: timed steps per preset (median) [1, 1000]"},
           {"estimate --mfu x", "--mfu: 'x' is not a valid value; allowed: model FLOP utilisation [1e-6, 1]"},
           // The memory guard of every command that allocates: refused before anything runs.
           {"reconcile --preset gpt2-xl --max-memory 8GiB",
            "--max-memory: reconcile gpt2-xl: a training step of this config (batch_size 1) peaks at 36,460,850,176 B"},
           {"reconcile --sweep --max-memory 1000", "--max-memory: reconcile sweep:"},
           {"extrapolate --validate tiny gpt2-xl --max-memory 8GiB", "--max-memory: extrapolate --validate gpt2-xl"},
           {"demo --rows 1048576 --in 65536 --out 65536 --max-memory 8GiB",
            "--max-memory: demo would allocate 1,133,871,366,144 B"},
           {"train --preset S --max-memory 800MB --data random", " fits: lower batch_size or raise --max-memory"}}) {
    const CommandResult r = run(b.args);
    EXPECT_EQ(r.exit_code, 2) << b.args << r.output;
    EXPECT_NE(r.output.find(b.needle), std::string::npos) << b.args << r.output;
  }
}

TEST(Cli, ExtrapolateValidatesCountsThenAppliesTheModel) {
  const std::string json = temp_path("extrapolate.json");
  std::filesystem::remove(json);
  const CommandResult r = run("extrapolate --validate tiny --steps 1 --target gpt2-xl --gpu h100-sxm --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("yes (0 B, 0 FLOP diff)"), std::string::npos) << r.output;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["validation"][0]["counts_exact"], true);
  // Every matmul shape of the tiny step was timed: its floor is positive and below the predicted step.
  const nlohmann::json& v = j["validation"][0];
  EXPECT_GT(v["matmul_floor_s"].get<double>(), 0.0);
  EXPECT_LE(v["matmul_floor_s"].get<double>(), v["predicted_s"].get<double>());
  ASSERT_GE(v["matmul_shapes"].size(), 6u);  // tiny: q/k/v/o, ffn, lm_head fwd/dx/dw and the attention products
  EXPECT_EQ(v["matmul_shapes"][0]["phase"], "forward");
  EXPECT_GT(j["target"]["step_seconds"].get<double>(), 0.0);
  EXPECT_EQ(run("extrapolate --validate tiny --gpu tpu").exit_code, 2);
  std::filesystem::remove(json);
}

}  // namespace
// Bad input exits 2 naming what is wrong; reckon's own faults exit 70 as internal errors, never as bad input.
TEST(ErrorExit, BadInputIsTwoInternalErrorsAreSeventy) {
  EXPECT_EQ(error_exit(std::invalid_argument("d_model: 0 is outside the allowed range [1, 65536]")).code, 2);
  EXPECT_EQ(error_exit(std::invalid_argument("x")).message, "reckon: error: x");
  EXPECT_EQ(error_exit(SizeOverflow("1 * 2 overflows int64")).code, 2);
  EXPECT_EQ(error_exit(std::runtime_error("--json: cannot write 'x': Permission denied")).code, 2);
  const ErrorExit internal = error_exit(std::logic_error("memory estimate: tensor allocated twice: x"));
  EXPECT_EQ(internal.code, 70);
  EXPECT_EQ(internal.message.rfind("reckon: internal error: memory estimate: tensor allocated twice: x", 0), 0u);
  EXPECT_EQ(error_exit(std::bad_alloc()).code, 70);
  EXPECT_EQ(error_exit(std::range_error("r")).code, 70);
  try {
    (void)nlohmann::json("text").get<int>();
  } catch (const nlohmann::json::exception& e) {
    EXPECT_EQ(error_exit(e).code, 70);  // a library's own error: reckon should have checked first
  }
}

// The estimate's figures on its result struct (the markdown and the JSON are rendered from it): GPT-2 XL by
// independent arithmetic.
TEST(EstimateResult, Gpt2XlFiguresOnTheStructAndTheJsonRenderedFromIt) {
  EstimateOptions o;
  o.preset = "gpt2-xl";
  o.activations = "textbook";
  o.query_scratchpad = false;
  const EstimateResult r = compute_estimate(o);
  const int64_t n = 2LL * 50257 * 1600 + 48LL * (4LL * 1600 * 1600 + 2LL * 1600 * 6400 + 2 * 1600) + 1600;
  EXPECT_EQ(r.num_parameters, n);
  int64_t rows = 0;
  for (const EstimateResult::ParameterRow& row : r.parameters) rows += row.count;
  EXPECT_EQ(rows, n);
  EXPECT_EQ(r.parameters.front().count, 50257LL * 1600);                                 // token embedding, V·D
  EXPECT_EQ(r.memory.parameter + r.memory.gradient + r.memory.optimizer_state, 16 * n);  // fp32: 4 + 4 + 8
  EXPECT_EQ(r.memory.total, 16 * n + r.memory.activation);
  EXPECT_EQ(r.memory.fixed, 16 * n);
  EXPECT_EQ(r.memory.max_batch, (80'000'000'000 - 16 * n) / r.memory.per_sample);
  EXPECT_EQ(r.precisions.size(), 4u);
  ASSERT_EQ(r.matrix.size(), 18u);  // 3 precisions × 2 attentions × 3 recomputes
  int configs = 0;
  for (const EstimateResult::VariantRow& row : r.matrix) configs += row.is_config;
  EXPECT_EQ(configs, 1);
  EXPECT_EQ(r.flops.step.optimizer, 14 * n);  // AdamW with weight decay, as the kernel executes it
  const nlohmann::json j = render_json(r, o);
  EXPECT_EQ(j["num_parameters"].get<int64_t>(), r.num_parameters);
  EXPECT_EQ(j["memory"]["peak_bytes"].get<int64_t>(), r.memory.total);
  EXPECT_EQ(j["memory"]["max_batch"].get<int64_t>(), r.memory.max_batch);
  EXPECT_EQ(j["matrix"].size(), r.matrix.size());
  EXPECT_NE(render_markdown(r, o).find(fmt_int(r.memory.total)), std::string::npos);
}

// The two GPT-2 XLs: the released one (LayerNorm with β, biases on every linear, learned positions, tied head) beside
// the accounting problem's, by kind of parameter, by independent arithmetic (D 1600, L 48, d_ff 6400, V 50257).
TEST(EstimateResult, ReleasedGpt2XlAgainstTheAccountingProblemsByKind) {
  EstimateOptions o;
  o.preset = "openai-gpt2-xl";
  o.activations = "textbook";
  o.query_scratchpad = false;
  const EstimateResult r = compute_estimate(o);
  const int64_t D = 1600, L = 48, F = 6400, V = 50257;
  const int64_t layer = 4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D;  // attention + biases, MLP + biases, 2 LN (γ, β)
  EXPECT_EQ(r.num_parameters, V * D + 1024 * D + L * layer + 2 * D);
  EXPECT_EQ(r.num_parameters, 1557611200LL);
  EXPECT_EQ(r.published_parameters, 1557611200LL);
  EXPECT_EQ(r.counterpart, "gpt2-xl");
  std::map<std::string, int64_t> diff;
  for (const EstimateResult::CounterpartRow& row : r.counterpart_rows) diff[row.item] = row.ours - row.theirs;
  EXPECT_EQ(diff.at("token embedding"), 0);
  EXPECT_EQ(diff.at("position embedding"), 1024 * D);
  EXPECT_EQ(diff.at("attention (with its biases)"), L * 4 * D);
  EXPECT_EQ(diff.at("ffn (with its biases)"), L * (F + D));
  EXPECT_EQ(diff.at("norm gains"), 0);
  EXPECT_EQ(diff.at("norm biases (LayerNorm β)"), 2 * L * D + D);
  EXPECT_EQ(diff.at("LM head (0: tied)"), -V * D);
  EXPECT_EQ(r.num_parameters - 1635537600LL, 1024 * D + L * (4 * D + F + D) + 2 * L * D + D - V * D);
  const std::string md = render_markdown(r, o);
  // One line each (the table pads its columns): the published row, the total row of the comparison.
  auto line_with = [&](const std::string& first, size_t from = 0) {
    const size_t at = md.find(first, from);
    return at == std::string::npos ? std::string() : md.substr(at, md.find('\n', at) - at);
  };
  EXPECT_NE(line_with("| published (model card)").find("| 1,557,611,200 | reckon's count is exact"), std::string::npos)
      << md;
  const size_t comparison = md.find("## openai-gpt2-xl vs gpt2-xl");
  ASSERT_NE(comparison, std::string::npos) << md;
  EXPECT_NE(line_with("| **total**", comparison).find("1,557,611,200 | 1,635,537,600 | -77,926,400 |"),
            std::string::npos)
      << md;
  const nlohmann::json j = render_json(r, o);
  EXPECT_EQ(j["published_parameters"].get<int64_t>(), 1557611200LL);
  EXPECT_EQ(j["counterpart"]["preset"], "gpt2-xl");
  EXPECT_EQ(j["counterpart"]["parameters"].size(), r.counterpart_rows.size());
  // The accounting problem's preset has no published count (it is no released model) and names the released one.
  o.preset = "gpt2-xl";
  const EstimateResult problem = compute_estimate(o);
  EXPECT_EQ(problem.published_parameters, 0);
  EXPECT_EQ(problem.counterpart, "openai-gpt2-xl");
  EXPECT_FALSE(render_json(problem, o).contains("published_parameters"));
}

}  // namespace reckon
