-- A step's unit of work is not always a shot: it is a shot id, a dialogue line
-- ("line_003"), "timeline", a QA pass ("shot_001.qa", "final.qa") or NULL for a
-- whole stage.  Name the column for what it holds.
ALTER TABLE steps RENAME COLUMN shot_id TO item;
