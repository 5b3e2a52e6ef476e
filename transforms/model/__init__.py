"""The model, without Beam: `locate` finds a checkpoint (Hub id, file, folder, gs://), `header` reads its input
sizes from a header only, `formats` reads the accepted formats, `architecture` infers and builds it, `device`
picks device and precision, `towers` runs its fused image and text towers, `scorer` scores pairs, and `faults`
isolates a failing record in a batch."""
