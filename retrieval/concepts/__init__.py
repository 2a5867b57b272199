"""Personal concepts: what only the user can name (*my dog Rex*, *our house*), taught from a few examples.

One entry point per capability, each over an open collection (:class:`retrieval.index.Index`):

* :func:`teach` (``teach.py``) -> :class:`TeachResult`: create or extend a concept from example paths (indexed
  files by their stored vectors; other image files are encoded once), fit it, save it, tag the collection;
* :func:`forget`, :func:`rename`, :func:`concepts`, :func:`show`, :func:`member_paths` (export);
* :class:`ReviewSession` (``review.py``): active learning, the least sure candidates first, refit per answer;
* :func:`suggest` (``suggest.py``) -> :class:`SuggestResults`: clusters of what no concept covers yet.

The pieces: ``book.py`` stores definitions (``concepts.json`` beside the collection), ``learner.py`` fits and
scores (the method and why: docs/concepts.md), ``tagging.py`` writes membership into the points' payload.
Searching with a concept is :mod:`retrieval.search.concept`.
"""

from retrieval.concepts.book import MAX_EXAMPLES, MAX_NAME_CHARS, Concept, ConceptError
from retrieval.concepts.review import Candidate, ReviewSession
from retrieval.concepts.suggest import Cluster, SuggestResults, accept, suggest
from retrieval.concepts.teach import (
    TeachResult,
    concepts,
    forget,
    member_paths,
    rename,
    show,
    tag_new,
    teach,
)

__all__ = ["MAX_EXAMPLES", "MAX_NAME_CHARS", "Candidate", "Cluster", "Concept", "ConceptError", "ReviewSession",
           "SuggestResults", "TeachResult", "accept", "concepts", "forget", "member_paths", "rename", "show", "suggest",
           "tag_new", "teach"]
