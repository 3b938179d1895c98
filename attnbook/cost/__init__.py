"""The book's analytic cost model, one module per quantity: ``flops``, ``params``, ``memory``
(bytes), ``io`` (memory traffic) and ``bounds`` (generalisation and recall capacity).

Every formula is checked in the tests against a count nobody here wrote: ``FlopCounterMode``,
``numel()`` of real modules, bytes saved for the backward pass. Convention: a multiply-add is 2
FLOPs. All functions are re-exported here: ``attnbook.cost.mha_flops(n, d, heads)``.
"""

from attnbook.cost.bounds import *  # noqa: F401,F403
from attnbook.cost.flops import *  # noqa: F401,F403
from attnbook.cost.inference import *  # noqa: F401,F403
from attnbook.cost.io import *  # noqa: F401,F403
from attnbook.cost.memory import *  # noqa: F401,F403
from attnbook.cost.params import *  # noqa: F401,F403
