# Included by llama.cpp's CMake build (CMAKE_PROJECT_INCLUDE, see .cargo/config.toml): build
# without AMX instructions on x86-64, so ggml leaves out its AMX kernels even with -march=native.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  add_compile_options(-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
endif()
