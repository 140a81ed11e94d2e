# Shared by the cross toolchain files: run target executables (ctest) under qemu user mode.
#   floe_set_qemu_emulator(<qemu binary>) uses FLOE_CROSS_SYSROOT (-L) and FLOE_QEMU_CPU (-cpu, if not empty).
function(floe_set_qemu_emulator qemu)
  find_program(FLOE_QEMU_${qemu} ${qemu})
  if(NOT FLOE_QEMU_${qemu})
    message(WARNING "${qemu} not found (apt: qemu-user): cross-built tests cannot run on this machine")
    return()
  endif()
  set(emu "${FLOE_QEMU_${qemu}}" -L "${FLOE_CROSS_SYSROOT}")
  if(NOT "${FLOE_QEMU_CPU}" STREQUAL "")
    list(APPEND emu -cpu "${FLOE_QEMU_CPU}")
  endif()
  set(CMAKE_CROSSCOMPILING_EMULATOR "${emu}" CACHE STRING "Runs target executables" FORCE)
endfunction()
