// Cast photos: uploaded through the artifact face (run "uploads"), then named by Character.reference_image_id.
import { upload } from "./api.js";

export async function uploadReference(file) {
  const manifest = await upload(file, { runId: "uploads", stage: "cast", artifactType: "reference_image" });
  return manifest.artifact_id;
}

// The i-th photo becomes the i-th character's reference; extra photos are ignored.
export async function attachCastPhotos(plan, files) {
  const characters = plan.characters || [];
  for (let i = 0; i < Math.min(files.length, characters.length); i++) {
    characters[i].reference_image_id = await uploadReference(files[i]);
  }
}
