# unrollopt_find_torch(<with_cuda>): libtorch as the imported target `torch`,
# and TORCH_INSTALL_PREFIX, for unrollopt's build and for the installed package
# (unrolloptConfig.cmake). Used with <with_cuda> ON, it is torch's own CMake
# package (find_package(Torch)), which also sets up CUDA for the CUDA kernels.
#
# Why not always torch's package: for a CUDA build of torch (what pip installs by
# default on Linux), TorchConfig.cmake -> Caffe2Config.cmake requires a CUDA
# toolkit ("Your installed Caffe2 version uses CUDA but I cannot find the CUDA
# libraries"), even for code with no CUDA in it, and most machines with such a
# torch have none. So with <with_cuda> OFF: torch's package for a CPU build of
# torch, where it needs nothing more (as before); for a CUDA build, the target
# made here from torch's install layout (headers, libtorch, libtorch_cpu, libc10
# and torch_cpu's compile definitions), which needs no toolkit. Code built
# against it runs with the CUDA torch; it just has no CUDA code of its own.
#
# torch is found where torch's package would be: Torch_DIR, or a folder on
# CMAKE_PREFIX_PATH (python -c "import torch; print(torch.utils.cmake_prefix_path)",
# or torch's install prefix).
macro(unrollopt_find_torch _uo_with_cuda)
  if(TARGET torch)
    # The caller (or a package found before) already has libtorch.
  elseif(${_uo_with_cuda})
    find_package(Torch REQUIRED)
  else()
    unrollopt_torch_config_dir(_uo_torch_config_dir)
    if(NOT _uo_torch_config_dir)
      find_package(Torch REQUIRED)  # not found: torch's package says so, as usual
    else()
      get_filename_component(_uo_torch_prefix "${_uo_torch_config_dir}/../../.." ABSOLUTE)
      if(NOT EXISTS "${_uo_torch_prefix}/lib/libtorch_cuda.so")
        find_package(Torch REQUIRED PATHS "${_uo_torch_config_dir}" NO_DEFAULT_PATH)
      else()
        unrollopt_torch_target("${_uo_torch_prefix}")
      endif()
    endif()
  endif()
endmacro()

# The folder of TorchConfig.cmake that find_package(Torch) would use, or "".
function(unrollopt_torch_config_dir out)
  set(dirs ${Torch_DIR} ${CMAKE_PREFIX_PATH})
  if(DEFINED ENV{CMAKE_PREFIX_PATH})
    string(REPLACE ":" ";" env_dirs "$ENV{CMAKE_PREFIX_PATH}")
    list(APPEND dirs ${env_dirs})
  endif()
  foreach(dir IN LISTS dirs)
    foreach(sub "" Torch share/cmake/Torch)
      if(EXISTS "${dir}/${sub}/TorchConfig.cmake")
        get_filename_component(found "${dir}/${sub}" ABSOLUTE)
        set(${out} "${found}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# The imported target `torch` of a CUDA build of torch, for code that uses its
# CPU side only: what torch's package gives minus its CUDA part.
macro(unrollopt_torch_target _uo_prefix)
  set(TORCH_INSTALL_PREFIX "${_uo_prefix}")
  set(TORCH_INCLUDE_DIRS "${_uo_prefix}/include" "${_uo_prefix}/include/torch/csrc/api/include")
  # torch_cpu's compile definitions (USE_DISTRIBUTED, ...), read from torch's
  # own export file: they select parts of torch's headers.
  set(_uo_torch_definitions "")
  file(READ "${_uo_prefix}/share/cmake/Caffe2/Caffe2Targets.cmake" _uo_targets)
  if(_uo_targets MATCHES
     "set_target_properties\\(torch_cpu PROPERTIES[^)]*INTERFACE_COMPILE_DEFINITIONS \"([^\"]*)\"")
    set(_uo_torch_definitions "${CMAKE_MATCH_1}")
  endif()
  add_library(torch SHARED IMPORTED)
  set_target_properties(torch PROPERTIES
    IMPORTED_LOCATION "${_uo_prefix}/lib/libtorch.so"
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_COMPILE_DEFINITIONS "${_uo_torch_definitions}"
    INTERFACE_LINK_LIBRARIES "${_uo_prefix}/lib/libtorch_cpu.so;${_uo_prefix}/lib/libc10.so")
  set(TORCH_LIBRARIES torch)
  set(Torch_FOUND TRUE)
  set(CAFFE2_USE_CUDA OFF)  # (what torch's package sets where it found no CUDA)
  unset(_uo_targets)
endmacro()
