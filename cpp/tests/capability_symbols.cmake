# Fails if the objects compiled per CPU capability define a symbol of
# unrollopt's own in common: the linker would keep one of the copies for every
# caller, possibly the one with instructions the running CPU lacks.
#   cmake -DNM=<nm> -DOBJECTS=<one object per capability, ';'-separated> -P capability_symbols.cmake
cmake_minimum_required(VERSION 3.24)
list(LENGTH OBJECTS count)
if(count LESS 2)
  message(FATAL_ERROR "expected the objects of at least two capabilities, got: ${OBJECTS}")
endif()
set(seen "")
set(shared "")
foreach(object IN LISTS OBJECTS)
  execute_process(COMMAND ${NM} --defined-only --extern-only --demangle ${object}
                  OUTPUT_VARIABLE listing COMMAND_ERROR_IS_FATAL ANY)
  string(REPLACE "\n" ";" lines "${listing}")
  set(names "")
  foreach(line IN LISTS lines)
    # "<address> <type> <name>"
    if(line MATCHES "^[0-9a-fA-F]+ [A-Za-z] (.*unrollopt::.*)$")
      list(APPEND names "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES names)
  list(LENGTH names n)
  message(STATUS "${object}: ${n} external symbols of unrollopt")
  foreach(name IN LISTS names)
    if(name IN_LIST seen)
      list(APPEND shared "${name}")
    endif()
  endforeach()
  list(APPEND seen ${names})
endforeach()
if(shared)
  list(JOIN shared "\n  " text)
  message(FATAL_ERROR "defined by more than one CPU capability (move them into the "
                      "capability's namespace, cpu::CPU_CAPABILITY):\n  ${text}")
endif()
message(STATUS "no unrollopt symbol is defined by two CPU capabilities")
