import Portability

// The worker guard comes first: started in a worker role, this process runs the worker and
// exits here, never reaching the command line below.
WorkerGuard.enter(roles: WorkerRoles.all)
Detectron.main()
