# Extents, zero detection, provisioning and the disk converter (svm-convert's library side).
target_sources(svmotion PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/extents.c
  ${CMAKE_CURRENT_LIST_DIR}/zero.c
  ${CMAKE_CURRENT_LIST_DIR}/provision.c)
target_sources(svmotion PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/convert.c
  ${CMAKE_CURRENT_LIST_DIR}/convert-nbd.c)
