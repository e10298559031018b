# Hardening (issue 11): locks, confinement, modes, access, errors, query results of any size.
add_subdirectory(tools/ctk-fill)
foreach(_h lock confine modes access errors query)
  svm_integ_test(harden-${_h} harden-${_h}.sh TIMEOUT 180)
endforeach()
