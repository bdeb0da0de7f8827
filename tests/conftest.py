import os
import sys

# tests import their helpers (reference, builders) as plain modules
sys.path.insert(0, os.path.dirname(__file__))
