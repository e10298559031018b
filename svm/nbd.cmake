# The NBD server: layer stack, wire parser, handshake, connections, export.
target_sources(svmotion PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/layer.c
  ${CMAKE_CURRENT_SOURCE_DIR}/nbd-parse.c
  ${CMAKE_CURRENT_SOURCE_DIR}/nbd-handshake.c
  ${CMAKE_CURRENT_SOURCE_DIR}/nbd-conn.c
  ${CMAKE_CURRENT_SOURCE_DIR}/export.c)
