"""The book's analytic cost model: every FLOP and memory formula, one submodule per chapter.

Convention: a multiply-add counts as 2 FLOPs.
"""
from .flops import *  # noqa: F401,F403  (chapter 2)
from .memory import *  # noqa: F401,F403  (chapter 3)
from .long import *  # noqa: F401,F403  (chapter 4)
from .bounds import *  # noqa: F401,F403  (chapter 5)
from .design import *  # noqa: F401,F403  (chapter 6)
from .generative import *  # noqa: F401,F403  (chapter 8)
