import DataLoading
import Engine
import Portability

/// The worker roles the `detectron` executable can be started in.
enum WorkerRoles {
    static let doctorProbe = "doctor-probe"

    static let all: [String: WorkerEntry] = [
        // Proves that this executable can start itself as a worker: guard, spawn and reaping.
        doctorProbe: { _ in 0 },
        // Data-loader process workers for the datasets this executable knows.
        DataLoaderWorker.role: DataLoaderWorker.entry(datasets: [ImageFolderDataset.self] + EngineWorkers.datasets),
    ]
}
