"""Manual passback: what a teacher previews, sends and follows, and the operators' job views.

Between the API and the store. `preview` reads each Canvas line item's points once and says
per student what would be sent or why not; `send` creates a batch and one job per sendable
student in one transaction (the delivery engine sends them); `batches` reports a batch's
outcome per student; `jobs` lists, shows and retries jobs for operators. Overrides and
complete/incomplete change only what goes to Canvas: nothing here writes `student_work`.
"""
