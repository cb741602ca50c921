import COCO
import Foundation
import Testing

func tempDir(_ tag: String) -> String {
    let p = NSTemporaryDirectory() + "sd-coco-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

func write(_ text: String, _ name: String, in dir: String) -> String {
    let path = dir + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    return path
}

let smallGT = """
{"images":[{"id":7,"file_name":"b.jpg","width":100,"height":50},{"id":3,"file_name":"a.jpg","width":40,"height":30}],
 "categories":[{"id":18,"name":"dog"},{"id":1,"name":"person"}],
 "annotations":[
  {"id":1,"image_id":3,"category_id":1,"bbox":[10,5,10,10],"area":100,"iscrowd":0},
  {"id":2,"image_id":3,"category_id":18,"bbox":[30,20,20,20],"area":300,"iscrowd":0},
  {"id":3,"image_id":7,"category_id":1,"bbox":[0,0,100,50],"area":5000,"iscrowd":1},
  {"id":4,"image_id":7,"category_id":18,"bbox":[5,5,0.5,10],"area":5,"iscrowd":0},
  {"id":5,"image_id":7,"category_id":18,"bbox":[50,10,10,10],"area":100,"iscrowd":0,"ignore":1}
 ]}
"""

@Suite("COCO datasets")
struct DatasetTests {
    @Test("roidb: sorted images, contiguous classes in file order, +1 boxes, clipping, crowd, ignore and degenerate boxes")
    func roidb() throws {
        let dir = tempDir("roidb")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = write(smallGT, "gt.json", in: dir)
        let ds = try JSONDataset(name: "small", annotationFile: path, imageDirectory: dir)
        #expect(ds.classes == ["__background__", "dog", "person"])
        #expect(ds.contiguousID == [18: 1, 1: 2])
        #expect(ds.jsonID[1] == 18)
        let (entries, stats) = try ds.roidb(checkImages: false)
        #expect(entries.map(\.imageID) == [3, 7])
        // Image 3: box 1 → (10, 5, 19, 14); box 2 reaches past 40×30 and is clipped to (30, 20, 39, 29).
        #expect(entries[0].boxes == [10, 5, 19, 14, 30, 20, 39, 29])
        #expect(entries[0].gtClasses == [2, 1])
        #expect(stats.clipped == 1)
        // Image 7: the crowd box stays (max overlap −1); the 0.5-wide box is degenerate; ignore is skipped.
        #expect(entries[1].boxes == [0, 0, 99, 49])
        #expect(entries[1].isCrowd == [true])
        #expect(stats.degenerate == 1 && stats.ignored == 1)
        #expect(entries[1].image == dir + "/b.jpg")
    }

    @Test("training roidb: flipped copies (flip twice is identity) and images with only crowd boxes dropped")
    func trainingRoidb() throws {
        let dir = tempDir("train")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ds = try JSONDataset(name: "small", annotationFile: write(smallGT, "gt.json", in: dir), imageDirectory: dir)
        let (entries, stats) = try ds.trainingRoidb(flipped: true, checkImages: false)
        #expect(entries.count == 2)  // image 3 and its flip; image 7 (crowd only) twice dropped
        #expect(stats.filteredImages == 2)
        #expect(entries[1].flipped)
        // x1' = W − x2 − 1 = 40 − 19 − 1 = 20; x2' = 40 − 10 − 1 = 29.
        #expect(Array(entries[1].boxes[0..<4]) == [20, 5, 29, 14])
        #expect(entries[1].flippedCopy() == entries[0])
    }

    @Test("a missing image names the annotation file, the image id and the path")
    func missingImage() throws {
        let dir = tempDir("missing")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ds = try JSONDataset(name: "small", annotationFile: write(smallGT, "gt.json", in: dir), imageDirectory: dir)
        #expect(throws: COCOError.missingImage(file: dir + "/gt.json", imageID: 3, path: dir + "/a.jpg")) { try ds.roidb(checkImages: true) }
    }

    @Test("bad inputs: malformed JSON, missing keys, unknown category, bad bbox, duplicate ids, unknown image in results")
    func badInputs() throws {
        let dir = tempDir("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func message(_ json: String) -> String {
            do {
                _ = try COCOFile.load(write(json, "f.json", in: dir))
                return "no error"
            } catch {
                return error.description
            }
        }
        #expect(message("{\"images\": [") .hasPrefix(dir + "/f.json: not a COCO file: invalid JSON"))
        #expect(message("{\"images\": [], \"annotations\": []}") == dir + "/f.json: not a COCO file: missing key 'categories' at the top level")
        let base = "{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":10,\"height\":10}],\"categories\":[{\"id\":1,\"name\":\"x\"}],\"annotations\":"
        #expect(message(base + "[{\"id\":9,\"image_id\":1,\"category_id\":5,\"bbox\":[0,0,1,1]}]}")
            == dir + "/f.json: annotation 9 has category_id 5, which is not among the file's categories")
        #expect(message(base + "[{\"id\":9,\"image_id\":1,\"category_id\":1,\"bbox\":[0,0,1]}]}")
            == dir + "/f.json: annotation 9: bbox must be [x, y, width, height], has 3 values")
        #expect(message(base + "[{\"id\":9,\"image_id\":1,\"category_id\":1,\"bbox\":[0,0,-1,1]}]}")
            == dir + "/f.json: annotation 9: bbox [0.0, 0.0, -1.0, 1.0] has a negative width or height")
        #expect(message(base + "[{\"id\":9,\"image_id\":2,\"category_id\":1,\"bbox\":[0,0,1,1]}]}")
            == dir + "/f.json: annotation 9 refers to image_id 2, which the ground truth does not have (results must match the annotation file)")
        #expect(message(base + "[{\"id\":9,\"image_id\":1,\"category_id\":1,\"bbox\":[0,0,1,1]},{\"id\":9,\"image_id\":1,\"category_id\":1,\"bbox\":[0,0,1,1]}]}")
            == dir + "/f.json: annotation 9: the id appears twice")
        #expect(message(base + "[{\"id\":9,\"image_id\":1,\"category_id\":1}]}").contains("missing key 'bbox' at .annotations[0]"))
        #expect(throws: COCOError.unreadable(file: dir + "/nope.json", reason: "no such file (check the path, or DETECTRON_DATA for named datasets)")) {
            try COCOFile.load(dir + "/nope.json")
        }
        let gt = try COCOFile.load(write(smallGT, "gt.json", in: dir))
        let results = write("[{\"image_id\":99,\"category_id\":1,\"bbox\":[0,0,1,1],\"score\":0.5}]", "dt.json", in: dir)
        #expect(throws: COCOError.unknownImage(file: results, entry: "detection #0", imageID: 99)) { try Detection.load(results, groundTruth: gt) }
        let badBox = write("[{\"image_id\":3,\"category_id\":1,\"bbox\":[0,0,1],\"score\":0.5}]", "dt2.json", in: dir)
        #expect(throws: COCOError.badDetection(file: badBox, index: 0, reason: "bbox must be [x, y, width, height], has 3 values")) { try Detection.load(badBox) }
    }

    @Test("a file without an annotations list (COCO's test splits) is unlabelled; an empty list is labelled; both round-trip")
    func labelled() throws {
        let images = #"[{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}]"#
        let categories = #"[{"id": 1, "name": "x"}]"#
        for (text, labelled) in [(#"{"images": \#(images), "categories": \#(categories)}"#, false),
                                 (#"{"images": \#(images), "annotations": [], "categories": \#(categories)}"#, true),
                                 // The careful parser (the fast scanner gives up on the unknown nesting) says the same.
                                 (#"{"info": {"a": [1, {"b": null}]}, "images": \#(images), "categories": \#(categories)}"#, false)] {
            let file = try COCOFile.parse(Data(text.utf8), source: "t.json")
            #expect(file.hasAnnotations == labelled, "\(text)")
            #expect(try COCOFile.parse(file.encoded(), source: "again.json").hasAnnotations == labelled)
        }
    }

    @Test("results round trip: write, read back equal; Detectron's corner boxes get +1 widths")
    func resultsRoundTrip() throws {
        let dir = tempDir("results")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dets = [Detection(imageID: 3, categoryID: 18, x1: 10, y1: 5, x2: 19, y2: 14, score: 0.875),
                    Detection(imageID: 7, categoryID: 1, bbox: [1.5, 2.25, 3, 4], score: 0.5)]
        #expect(dets[0].bbox == [10, 5, 10, 10])
        try Detection.write(dets, to: dir + "/r.json")
        #expect(try Detection.load(dir + "/r.json") == dets)
        let gt = try COCOFile.load(write(smallGT, "gt.json", in: dir))
        try gt.encoded().write(to: URL(fileURLWithPath: dir + "/gt2.json"))
        #expect(try COCOFile.load(dir + "/gt2.json").annotations.count == gt.annotations.count)
    }

    @Test("the catalog resolves names under the data root and names the unknown ones")
    func catalog() throws {
        let c = DatasetCatalog(root: "/data", environment: [:])
        #expect(try c.resolve("coco_2017_val") == DatasetCatalog.Entry(imageDirectory: "/data/coco/coco_val2017", annotationFile: "/data/coco/annotations/instances_val2017.json"))
        #expect(DatasetCatalog(environment: ["DETECTRON_DATA": "/x"]).root == "/x")
        #expect(throws: COCOError.self) { try c.resolve("coco_2017_vall") }
    }

    @Test("the shapes dataset is deterministic for a seed, has every area range, crowds, and loads back")
    func shapes() throws {
        let a = ShapesDataset(seed: 5).sample(split: "train", index: 3)
        let b = ShapesDataset(seed: 5).sample(split: "train", index: 3)
        #expect(a.image == b.image)
        #expect(ShapesDataset(seed: 6).sample(split: "train", index: 3).image != a.image)
        let dir = tempDir("shapes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try ShapesDataset(seed: 1).write(split: "val", count: 40, to: dir)
        let areas = file.annotations.filter { !$0.isCrowd }.map(\.evaluationArea)
        #expect(areas.contains { $0 < 32 * 32 } && areas.contains { $0 >= 32 * 32 && $0 <= 96 * 96 } && areas.contains { $0 > 96 * 96 })
        #expect(file.annotations.contains { $0.isCrowd })
        #expect(Set(file.images.map { $0.width > $0.height }).count == 2)
        let ds = try JSONDataset(name: "shapes_val", annotationFile: dir + "/annotations/instances_val.json", imageDirectory: dir + "/val")
        let (entries, _) = try ds.roidb(checkImages: true)
        #expect(entries.count == 40)
        #expect(ds.classes == ["__background__", "circle", "square", "triangle", "star"])
    }
}
