// Private: the constructors of the runners this build has (see runner.cpp's make_runner).
#pragma once

#include <memory>
#include <string>

#include "facecore/engine/runner.h"

namespace facecore::engine {

std::shared_ptr<IRunner> make_reference_runner(const ModelSpec& spec, const RunnerOptions& options);

#ifdef FACECORE_HAVE_TORCH
std::shared_ptr<IRunner> make_torch_runner(const ModelSpec& spec, const RunnerOptions& options);
#endif

#ifdef FACECORE_HAVE_TENSORRT
std::shared_ptr<IRunner> make_tensorrt_runner(const ModelSpec& spec, const RunnerOptions& options);
#endif

// "cuda:3" -> 3, "cuda" -> 0, "cpu" -> -1; anything else throws Error.
int parse_device(const std::string& device);

}  // namespace facecore::engine
