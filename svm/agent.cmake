# The agent: VM descriptors, datastores, the control socket and protocol, the agent core.
target_sources(svmotion PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/descriptor.c
  ${CMAKE_CURRENT_SOURCE_DIR}/datastore.c
  ${CMAKE_CURRENT_SOURCE_DIR}/control-proto.c
  ${CMAKE_CURRENT_SOURCE_DIR}/control-client.c
  ${CMAKE_CURRENT_SOURCE_DIR}/control.c
  ${CMAKE_CURRENT_SOURCE_DIR}/agent.c
  ${CMAKE_CURRENT_SOURCE_DIR}/agent-vm.c
  ${CMAKE_CURRENT_SOURCE_DIR}/agent-disk.c
  ${CMAKE_CURRENT_SOURCE_DIR}/agent-out.c)
