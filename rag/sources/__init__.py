"""Where documents live besides local folders: object storage, file servers, and so on; each
source lists what it holds with a version tag, and hands over one item's bytes at a time."""
