import Portability

// Before anything allocates, in workers too: keep freed megabyte blocks (images, batches) for
// reuse instead of handing them back to the kernel and faulting them in again (MallocTuning).
MallocTuning.keepLargeBlocks()
// The worker guard comes next: started in a worker role, this process runs the worker and
// exits here, never reaching the command line below.
WorkerGuard.enter(roles: WorkerRoles.all)
Detectron.main()
