"""nascomp: neural architecture compression with a learnable embedding-space kernel
(Cao, Wang, Kitani, ICLR 2019)."""
from nascomp import teachers
from nascomp.export import export_onnx, load_student
from nascomp.graph import ArchGraph, GraphError, GraphNet
from nascomp.compression_space import Candidate, CompressionSpace

__all__ = ["teachers", "ArchGraph", "GraphError", "GraphNet", "CompressionSpace", "Candidate", "load_student", "export_onnx"]
__version__ = "0.1.0"
