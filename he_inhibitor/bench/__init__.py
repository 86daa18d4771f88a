"""`he-inhibitor bench`: depth, op counts, latency (measured beside the op-count floor), bytes, accuracy.

target.py loads what is benched (a circuit bundle or a student directory),
corpus.py embeds the sentences, measure.py runs one target, report.py prints
and plots, cli.py wires them to the command line.
"""
